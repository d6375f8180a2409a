//! The queries that draw one site's audit report from the store: only the
//! series a fleet store keeps (the `portwatch:*` recording rules of
//! deploy/prometheus/portwatch.rules.yml, `portwatch_site_info`, `up`).

use std::time::Duration;

/// A PromQL string literal of `s`: a site name cannot end the selector.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The store's resolution of estimated counts: a recorded 5-minute rate
/// read each minute and summed over the range, times 60 s, is the number
/// of events (a finer step only repeats samples of the same 5 minutes).
pub const COUNT_STEP_SECONDS: u64 = 60;

/// The queries of one site over `range` before the report's time.
#[derive(Clone, Debug)]
pub struct SiteQueries {
    site: String,
    range: String,
}

impl SiteQueries {
    pub fn new(site: &str, range: Duration) -> SiteQueries {
        SiteQueries {
            site: string(site),
            range: format!("{}s", range.as_secs().max(1)),
        }
    }

    fn sel(&self, name: &str, extra: &str) -> String {
        format!("{name}{{site={}{extra}}}", self.site)
    }

    /// The site's sensors (job, instance) seen within the range.
    pub fn site_info(&self) -> String {
        format!(
            "last_over_time({}[{}])",
            self.sel("portwatch_site_info", ""),
            self.range
        )
    }

    /// Required edges the sensors report now, with their window.
    pub fn edge_window(&self) -> String {
        self.sel("portwatch:edge_window_seconds:max", "")
    }

    /// The site's verdict per edge: 1 missing.
    pub fn edge_missing(&self) -> String {
        self.sel("portwatch:edge_missing:site", "")
    }

    /// How many covering sensors report each edge.
    pub fn edge_covering(&self) -> String {
        self.sel("portwatch:edge_covering_sensors:count", "")
    }

    /// The latest evidence of each edge within the range.
    pub fn edge_last_seen(&self) -> String {
        format!(
            "last_over_time({}[{}])",
            self.sel("portwatch:edge_last_seen_timestamp_seconds:max", ""),
            self.range
        )
    }

    /// Connections per edge and verdict over the range, estimated; a
    /// series present in the range with no rate yet counts 0.
    pub fn connections(&self) -> String {
        self.counted(&self.sel("portwatch:connections:rate5m", ""))
    }

    /// Handshakes per edge and outcome over the range, estimated.
    pub fn handshakes(&self) -> String {
        self.counted(&self.sel("portwatch:handshakes:rate5m", ""))
    }

    fn counted(&self, series: &str) -> String {
        let (r, step) = (&self.range, COUNT_STEP_SECONDS);
        format!(
            "(sum_over_time({series}[{r}:{step}s]) * {step}) or (0 * last_over_time({series}[{r}]))"
        )
    }

    /// Edges whose connections sensors of different kinds saw with
    /// different fates, at some time in the range.
    pub fn disagreements(&self) -> String {
        format!(
            "max_over_time({}[{}]) == 1",
            self.sel("portwatch:edge_disagreement:site", ""),
            self.range
        )
    }

    /// Handshakes per edge, kind of sensor and outcome over the range: the
    /// 5-minute increases read every 5 minutes and summed, else (no step
    /// fell on the series yet) its largest increase.
    pub fn handshakes_by_kind(&self) -> String {
        let series = self.sel(
            "portwatch:handshakes_by_kind:increase5m",
            ",outcome=~\"established|refused|unanswered|denied\"",
        );
        let r = &self.range;
        format!("sum_over_time({series}[{r}:300s]) or max_over_time({series}[{r}])")
    }

    /// The site's sensors' `portwatch:up` now (1 scraped, 0 not).
    pub fn sensors_up(&self) -> String {
        format!("portwatch:up and on (job, instance) {}", self.site_info())
    }

    /// The site's sensors that can vouch for an absence now.
    pub fn sensors_covering(&self) -> String {
        format!(
            "portwatch:sensor_covering and on (job, instance) {}",
            self.site_info()
        )
    }

    /// The kinds of source each sensor of the site reads.
    pub fn sensor_kinds(&self) -> String {
        format!(
            "last_over_time(portwatch_sensor_source_info[{}]) and on (job, instance) {}",
            self.range,
            self.site_info()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_name_stays_inside_its_string() {
        assert_eq!(string("plain"), "\"plain\"");
        assert_eq!(string("a\"}or vector(1)#"), "\"a\\\"}or vector(1)#\"");
        assert_eq!(string("x\\\ny"), "\"x\\\\\\ny\"");
    }

    #[test]
    fn the_queries_select_the_site_and_range() {
        let q = SiteQueries::new("multi-node", Duration::from_secs(86400));
        assert_eq!(
            q.site_info(),
            "last_over_time(portwatch_site_info{site=\"multi-node\"}[86400s])"
        );
        assert_eq!(
            q.connections(),
            "(sum_over_time(portwatch:connections:rate5m{site=\"multi-node\"}[86400s:60s]) * 60) \
             or (0 * last_over_time(portwatch:connections:rate5m{site=\"multi-node\"}[86400s]))"
        );
    }
}
