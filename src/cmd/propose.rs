//! `portwatch propose`: two passes over the captures. The first keeps
//! every connection attempt and its outcome; the proposal is inferred from
//! them; the second replays the captures against the proposed site, for the
//! gaps between required-edge evidence and the findings left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::input::{Input, InputSpec};
use super::settings::{ProposeBase, ProposeSettings};
use super::{load, print, Error, Status};
use crate::cli::ProposeFormat;
use crate::config::LoadError;
use crate::decode::Control;
use crate::decode::Decap;
use crate::model::{load_model, Model, BUNDLED_MODELS};
use crate::pipeline::Pipeline;
use crate::policy::{Policy, Visibility};
use crate::propose::{self, Kind, Mode, Observer, Proposal, Shortfall, SourceSummary};
use crate::report::{Report, SourceFacts};
use crate::source::Poll;
use crate::state::TrackConfig;

/// One pass: the pipeline and what the observer kept.
struct Pass {
    pipeline: Pipeline,
    observer: Observer,
    facts: Vec<SourceFacts>,
}

fn pass(
    files: &[PathBuf],
    policy: Arc<Policy>,
    track: TrackConfig,
    decap: Decap,
) -> Result<Pass, Error> {
    let mut input = Input::open(&InputSpec::Files(files.to_vec()))?;
    let mut observer = Observer::new(policy.edges.len());
    let mut pl = Pipeline::new(policy, track);
    pl.set_decap(decap);
    pl.record_events(true);
    loop {
        let poll = input.source().poll(&mut |f| {
            pl.ingest(f);
        });
        for e in pl.drain_events() {
            observer.feed(&e);
        }
        if poll? == Poll::End {
            break;
        }
    }
    if let Some((_, end)) = pl.span() {
        pl.finish(end);
    }
    for e in pl.drain_events() {
        observer.feed(&e);
    }
    Ok(Pass {
        pipeline: pl,
        observer,
        facts: input.facts(),
    })
}

/// A bundled model by id, or a rules file.
fn model_named(m: &str) -> Result<Model, Error> {
    if let Some((_, file, text)) = BUNDLED_MODELS.iter().find(|(id, _, _)| *id == m) {
        return Ok(load_model(Path::new(file), text).map_err(LoadError::Config)?);
    }
    if !Path::new(m).exists() {
        let known: Vec<&str> = BUNDLED_MODELS.iter().map(|b| b.0).collect();
        return Err(Error::Usage(format!(
            "--model {m}: no such file and no bundled model of that name; bundled: {}",
            known.join(", ")
        )));
    }
    let text = std::fs::read_to_string(m).map_err(|source| LoadError::Read {
        path: m.to_string(),
        source,
    })?;
    Ok(load_model(Path::new(m), &text).map_err(LoadError::Config)?)
}

/// Is there enough in the first pass to infer from? Names what is missing.
fn enough(p: &Pass) -> Result<(), Shortfall> {
    let stats = p.pipeline.stats();
    let (syns, synacks) = (stats.control(Control::Syn), stats.control(Control::SynAck));
    if syns == 0 {
        return Err(Shortfall::NoSyn {
            frames: stats.frames,
        });
    }
    if synacks == 0 {
        return Err(Shortfall::NoSynAck { syns });
    }
    if !p.observer.flows().values().any(|s| s.established() > 0) {
        return Err(Shortfall::NoEstablished);
    }
    Ok(())
}

pub fn propose(s: ProposeSettings) -> Result<Status, Error> {
    let (policy, mode) = match &s.base {
        ProposeBase::Site(site) => (load(site)?.policy, Mode::Site),
        ProposeBase::Model { model, name } => {
            let model = model_named(model)?;
            let site = propose::empty_site(name, &model);
            let p = propose::compile(&model, site).map_err(Error::Proposal)?;
            (p, Mode::Model)
        }
    };
    let model = policy.model.clone();
    let base = policy.site.clone();

    let first = pass(&s.files, Arc::new(policy), s.track, s.decap)?;
    let truncated = first.facts.iter().any(|f| f.stopped.is_some());
    for f in &first.facts {
        if let Some(st) = &f.stopped {
            eprintln!(
                "warning: {}: stopped at byte {} after {} packets: {}; the proposal covers what was read",
                f.path, st.offset, f.packets, st.reason
            );
        }
    }
    enough(&first)?;

    let flows = first.observer.flows();
    let mut inferred = propose::infer(first.pipeline.policy(), flows, mode);
    if mode == Mode::Model && inferred.nodes.is_empty() {
        return Err(Shortfall::NoNode.into());
    }
    if first.observer.dropped() > 0 {
        inferred.notes.push(format!(
            "{} connection attempts were not kept (more than {} distinct client/server/port \
             triples): the proposal covers the first ones",
            first.observer.dropped(),
            propose::MAX_FLOWS
        ));
    }
    let site = propose::patched_site(&base, &model, &inferred, &[]);
    let without_allow = propose::compile(&model, site).map_err(Error::Proposal)?;
    let mut found = propose::allow_entries(
        &without_allow,
        flows,
        s.thresholds,
        &inferred.unknown_clients,
    );
    // An external named after its address is there for an allowance: with
    // none proposed it goes too, and what is held back names the address.
    let named =
        |name: &str| (found.allow.iter()).any(|a| a.entry.from == name || a.entry.to == name);
    let unneeded: BTreeMap<String, String> = (inferred.externals.iter())
        .filter(|x| x.entry.services.is_empty() && !named(&x.entry.name))
        .map(|x| (x.entry.name.clone(), x.entry.addresses.join(",")))
        .collect();
    inferred
        .externals
        .retain(|x| !unneeded.contains_key(&x.entry.name));
    for h in &mut found.suspicious {
        for end in [&mut h.src, &mut h.dst] {
            if let Some(addr) = unneeded.get(end.as_str()) {
                *end = addr.clone();
            }
        }
    }
    if found.suspicious_left_off > 0 {
        inferred.notes.push(format!(
            "{} more suspicious observations not listed (at most {} are)",
            found.suspicious_left_off,
            propose::MAX_SUSPICIOUS
        ));
    }
    let propose::Allowances {
        allow,
        evidence: allow_evidence,
        suspicious,
        ..
    } = found;
    let entries: Vec<_> = allow.iter().map(|a| a.entry.clone()).collect();
    let site = propose::patched_site(&base, &model, &inferred, &entries);
    let patched = propose::compile(&model, site).map_err(Error::Proposal)?;

    let second = pass(&s.files, Arc::new(patched), s.track, s.decap)?;
    let report = Report::build(
        &second.pipeline,
        second.facts.clone(),
        second.pipeline.span(),
        &Visibility::default(),
    );
    let proposal = Proposal {
        kind: match mode {
            Mode::Site => Kind::Patch,
            Mode::Model => Kind::Site,
        },
        site: base.name.clone(),
        model: model.id.clone(),
        source: SourceSummary::of(
            first.facts.iter().map(|f| f.path.clone()).collect(),
            first.pipeline.span(),
            flows,
        ),
        nodes: inferred.nodes,
        user_networks: inferred.user_networks,
        externals: inferred.externals,
        allow,
        allow_evidence,
        required_edges: propose::edge_gaps(second.pipeline.policy(), &second.observer),
        suspicious,
        left_out: propose::left_out(&report.findings),
        notes: inferred.notes,
    };
    match s.format {
        ProposeFormat::Yaml => print(&proposal.to_yaml())?,
        ProposeFormat::Json => print(&format!("{}\n", proposal.to_json()))?,
    }
    Ok(if truncated {
        Status::Truncated
    } else {
        Status::Clean
    })
}
