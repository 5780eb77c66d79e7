//! The relay's queue gauges, read from the queues when `/metrics` is gathered: depth, bytes, the
//! oldest request's age and the dead letters kept, per app.

use std::sync::{Arc, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts};

use super::Relay;
use crate::task::unix_now;

/// A collector over a [`Relay`] (held weakly: the relay does not outlive the exporter for it).
pub struct RelayGauges {
    relay: Weak<Relay>,
    requests: GaugeVec,
    bytes: GaugeVec,
    oldest_age: GaugeVec,
    dead_letters: GaugeVec,
}

impl RelayGauges {
    pub fn new(relay: &Arc<Relay>) -> prometheus::Result<RelayGauges> {
        let gauge = |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &["sdk_app_id"]);
        Ok(RelayGauges {
            relay: Arc::downgrade(relay),
            requests: gauge(
                "tiw_exporter_callback_forward_queue_requests",
                "Callbacks queued for the app's callback_forward_url, not yet taken by the backend.",
            )?,
            bytes: gauge(
                "tiw_exporter_callback_forward_queue_bytes",
                "Bytes of the queued callbacks (bodies and headers), against callback.forward.max_queue_bytes.",
            )?,
            oldest_age: gauge(
                "tiw_exporter_callback_forward_oldest_age_seconds",
                "Age of the oldest queued callback (0 when none waits): how far the backend is behind TIW.",
            )?,
            dead_letters: gauge(
                "tiw_exporter_callback_forward_dead_letters",
                "Callbacks the backend refused for good (4xx), kept in the store (at most 1000 per app).",
            )?,
        })
    }

    fn families(&self) -> [&GaugeVec; 4] {
        [&self.requests, &self.bytes, &self.oldest_age, &self.dead_letters]
    }
}

impl Collector for RelayGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.families().into_iter().flat_map(|g| g.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for g in self.families() {
            g.reset();
        }
        if let Some(relay) = self.relay.upgrade() {
            let now = unix_now();
            for d in relay.depths() {
                let app = d.sdk_app_id.to_string();
                self.requests.with_label_values(&[&app]).set(d.requests as f64);
                self.bytes.with_label_values(&[&app]).set(d.bytes as f64);
                let age = d.oldest.map_or(0.0, |at| (now - at).max(0.0));
                self.oldest_age.with_label_values(&[&app]).set(age);
                self.dead_letters.with_label_values(&[&app]).set(d.dead_letters as f64);
            }
        }
        self.families().into_iter().flat_map(|g| g.collect()).collect()
    }
}
