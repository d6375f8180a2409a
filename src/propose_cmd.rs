//! The `propose` command: two passes over the captures. The first keeps
//! every connection attempt and its outcome; the proposal is inferred from
//! them; the second replays the captures against the proposed site, for the
//! gaps between required-edge evidence and the findings left out.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::app::{exit, out, report_load_error};
use crate::cli::{ProposeArgs, ProposeFormat};
use crate::config::load_policy;
use crate::decode::Control;
use crate::model::{load_model, Model, BUNDLED_MODELS};
use crate::pipeline::Pipeline;
use crate::policy::Policy;
use crate::propose::{self, Inferred, Kind, Mode, Observer, Proposal};
use crate::report::{Report, SourceFacts, Visibility};
use crate::run::source_facts;
use crate::source::file::MergedFiles;
use crate::source::{Poll, Source};
use crate::state::TrackConfig;

/// One pass: the pipeline and what the observer kept.
struct Pass {
    pipeline: Pipeline,
    observer: Observer,
    facts: Vec<SourceFacts>,
}

fn pass(files: &[PathBuf], policy: Arc<Policy>, track: TrackConfig) -> Result<Pass, String> {
    let mut src = MergedFiles::open(files).map_err(|e| e.to_string())?;
    let mut observer = Observer::new(policy.edges.len());
    let mut pl = Pipeline::new(policy, track);
    pl.record_events(true);
    loop {
        let poll = src.poll(&mut |f| {
            pl.ingest(f);
        });
        for e in pl.drain_events() {
            observer.feed(&e);
        }
        match poll {
            Ok(Poll::End) => break,
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    if let Some((_, end)) = pl.span() {
        pl.finish(end);
    }
    for e in pl.drain_events() {
        observer.feed(&e);
    }
    let facts = src.facts().into_iter().map(source_facts).collect();
    Ok(Pass {
        pipeline: pl,
        observer,
        facts,
    })
}

fn model_named(m: &str) -> Result<Model, String> {
    let (file, text) = match BUNDLED_MODELS.iter().find(|(id, _, _)| *id == m) {
        Some((_, file, text)) => (PathBuf::from(file), text.to_string()),
        None if Path::new(m).exists() => (
            PathBuf::from(m),
            std::fs::read_to_string(m).map_err(|e| format!("{m}: {e}"))?,
        ),
        None => {
            let known: Vec<&str> = BUNDLED_MODELS.iter().map(|b| b.0).collect();
            return Err(format!(
                "--model {m}: no such file and no bundled model of that name; bundled: {}",
                known.join(", ")
            ));
        }
    };
    load_model(&file, &text).map_err(|e| e.to_string())
}

/// Is there enough in the first pass to infer from? Names what is missing.
fn enough(p: &Pass) -> Result<(), String> {
    let stats = p.pipeline.stats();
    let (syn, synack) = (stats.control(Control::Syn), stats.control(Control::SynAck));
    if syn == 0 {
        return Err(format!(
            "no connection attempts (TCP SYN) in {} frames: nothing to infer from; \
             the capture needs the start of connections",
            stats.frames
        ));
    }
    if synack == 0 {
        return Err(format!(
            "{syn} SYNs but no SYN-ACKs seen: a one-way capture (only clients' packets) cannot \
             show which addresses accept connections; capture both directions"
        ));
    }
    if !p.observer.flows().values().any(|s| s.established() > 0) {
        return Err(
            "no connection attempt was answered with SYN-ACK: no established connection to \
             infer from"
                .into(),
        );
    }
    Ok(())
}

pub fn propose(args: ProposeArgs) -> u8 {
    match build(&args) {
        Ok((proposal, truncated)) => {
            out(&match args.format {
                ProposeFormat::Yaml => proposal.to_yaml(),
                ProposeFormat::Json => format!("{}\n", proposal.to_json()),
            });
            if truncated {
                exit::TRUNCATED
            } else {
                exit::OK
            }
        }
        Err(code) => code,
    }
}

fn fail(msg: impl std::fmt::Display) -> u8 {
    eprintln!("error: {msg}");
    exit::BAD_INPUT
}

fn build(args: &ProposeArgs) -> Result<(Proposal, bool), u8> {
    let track = TrackConfig::from(&args.track);
    let (policy, mode) = match (&args.site, &args.model) {
        (Some(site), None) => {
            let l = load_policy(site, args.rules.as_deref()).map_err(|e| {
                report_load_error(&e);
                exit::BAD_INPUT
            })?;
            (l.policy, Mode::Site)
        }
        (None, Some(m)) => {
            let model = model_named(m).map_err(fail)?;
            let name = args.name.as_deref().unwrap_or("proposed");
            let site = propose::empty_site(name, &model);
            (propose::compile(&model, site).map_err(fail)?, Mode::Model)
        }
        _ => {
            return Err(fail(
                "give --site FILE (a patch) or --model MODEL (a whole site)",
            ))
        }
    };
    let model = policy.model.clone();
    let base = policy.site.clone();

    let first = pass(&args.files, Arc::new(policy), track).map_err(fail)?;
    let truncated = first.facts.iter().any(|f| f.stopped.is_some());
    for f in &first.facts {
        if let Some(s) = &f.stopped {
            eprintln!(
                "warning: {}: stopped at byte {} after {} packets: {}; the proposal covers what was read",
                f.path, s.offset, f.packets, s.reason
            );
        }
    }
    enough(&first).map_err(fail)?;

    let flows = first.observer.flows();
    let mut inferred: Inferred = propose::infer(first.pipeline.policy(), flows, mode);
    if mode == Mode::Model && inferred.nodes.is_empty() {
        return Err(fail(
            "no address accepted a connection on a port of the model's roles \
             (such as 4242 for QRS or 443 for QPS): nothing to make a node of",
        ));
    }
    if first.observer.dropped() > 0 {
        inferred.notes.push(format!(
            "{} connection attempts were not kept (more than {} distinct client/server/port \
             triples): the proposal covers the first ones",
            first.observer.dropped(),
            propose::MAX_FLOWS
        ));
    }
    let internal = |e: crate::config::diag::ConfigError| {
        fail(format!("the proposed site does not compile (a bug): {e}"))
    };
    let without_allow =
        propose::compile(&model, propose::patched_site(&base, &model, &inferred, &[]))
            .map_err(internal)?;
    let (allow, allow_evidence) = propose::allow_entries(&without_allow, flows);
    let entries: Vec<_> = allow.iter().map(|a| a.entry.clone()).collect();
    let patched = propose::compile(
        &model,
        propose::patched_site(&base, &model, &inferred, &entries),
    )
    .map_err(internal)?;

    let second = pass(&args.files, Arc::new(patched), track).map_err(fail)?;
    let report = Report::build(
        &second.pipeline,
        second.facts.clone(),
        second.pipeline.span(),
        &Visibility::default(),
    );
    let p = second.pipeline.policy();
    Ok((
        Proposal {
            kind: match mode {
                Mode::Site => Kind::Patch,
                Mode::Model => Kind::Site,
            },
            site: base.name.clone(),
            model: model.id.clone(),
            source: propose::SourceSummary::of(
                first.facts.iter().map(|f| f.path.clone()).collect(),
                first.pipeline.span(),
                flows,
            ),
            nodes: inferred.nodes,
            user_networks: inferred.user_networks,
            externals: inferred.externals,
            allow,
            allow_evidence,
            required_edges: propose::edge_gaps(p, &second.observer),
            left_out: propose::left_out(&report.findings),
            notes: inferred.notes,
        },
        truncated,
    ))
}
