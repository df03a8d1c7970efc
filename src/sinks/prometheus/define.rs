//! Metric definitions: every metric gets the common prefix and is registered once.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

const PREFIX: &str = "mediasoup_server";

/// Creates metrics under the common prefix and registers them. Names, labels and buckets are
/// constants of the sink, so an error here is a bug, not a runtime condition.
pub(super) struct Define<'a>(pub(super) &'a Registry);

impl Define<'_> {
    fn add<C: Collector + Clone + 'static>(&self, metric: prometheus::Result<C>) -> C {
        let metric = metric.expect("metric definitions are valid");
        self.0
            .register(Box::new(metric.clone()))
            .expect("metric names are unique");
        metric
    }

    fn opts(name: &str, help: &str) -> Opts {
        Opts::new(format!("{PREFIX}_{name}"), help)
    }

    fn histogram_opts(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
        HistogramOpts::new(format!("{PREFIX}_{name}"), help).buckets(buckets.to_vec())
    }

    pub(super) fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::with_opts(Self::opts(name, help)))
    }

    pub(super) fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Self::opts(name, help), labels))
    }

    pub(super) fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::with_opts(Self::opts(name, help)))
    }

    pub(super) fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Self::opts(name, help), labels))
    }

    pub(super) fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.add(Histogram::with_opts(Self::histogram_opts(
            name, help, buckets,
        )))
    }

    pub(super) fn histograms(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[&str],
    ) -> HistogramVec {
        self.add(HistogramVec::new(
            Self::histogram_opts(name, help, buckets),
            labels,
        ))
    }
}
