//! The one-line explanation of an [`OverQuota`] refusal, per limit (ADR 0019).

use std::fmt;

use super::{Limit, OverQuota};
use crate::money::format_tokens;
use crate::period::{format_gpu_hours, format_utc};

impl fmt::Display for OverQuota {
    /// `over quota: namespace team-a holds 8 of its 8 GPUs of group h100 and needs 4 more; cohort
    /// research lends 0 now`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(group) = &self.group else {
            return write!(
                f,
                "over quota: namespace {} has no quota for {} in this pool (the pool admin sets \
                 quotas in the GpuPool's spec.quotas)",
                self.namespace, self.model
            );
        };
        let (period, window) = match self.limit {
            Limit::Gpus => {
                write!(
                    f,
                    "over quota: namespace {} holds {} of its {} GPUs of group {group} and needs {} \
                     more; ",
                    self.namespace, self.used, self.nominal, self.need
                )?;
                return self.lends(f);
            }
            Limit::GpuHours { period, window } => (period, window),
            Limit::Spend {
                period,
                window: (start, end),
                spent,
                limit,
                need: None,
            } => {
                return write!(
                    f,
                    "over quota: group {group} of namespace {} limits spend to {} tokens per {} \
                     (since {}: {} spent or locked, until {}) and this job's cost has no bound: \
                     set spec.maxPricePerGpuHour so its escrow lock (price × GPUs × maxDuration) \
                     can be counted",
                    self.namespace,
                    format_tokens(limit),
                    period.noun(),
                    format_utc(start),
                    format_tokens(spent),
                    format_utc(end),
                );
            }
            Limit::Spend {
                period,
                window: (start, end),
                spent,
                limit,
                need: Some(need),
            } => {
                return write!(
                    f,
                    "over quota: namespace {} has spent or locked {} of its {} tokens of group \
                     {group} this {} (since {}) and this job locks up to {} (maxPricePerGpuHour × \
                     GPUs × maxDuration); {} left until {}; spend is never borrowed",
                    self.namespace,
                    format_tokens(spent),
                    format_tokens(limit),
                    period.noun(),
                    format_utc(start),
                    format_tokens(need),
                    format_tokens(limit.saturating_sub(spent)),
                    format_utc(end),
                );
            }
        };
        write!(
            f,
            "over quota: namespace {} has used or committed {} of its {} GPU-hours of group \
             {group} this {} (since {}) and needs up to {} more (GPUs × maxDuration within the {}); \
             {} left until {}; ",
            self.namespace,
            format_gpu_hours(self.used),
            format_gpu_hours(self.nominal),
            period.noun(),
            format_utc(window.0),
            format_gpu_hours(self.need),
            period.noun(),
            format_gpu_hours(self.nominal.saturating_sub(self.used)),
            format_utc(window.1),
        )?;
        self.lends(f)
    }
}

impl OverQuota {
    /// `cohort research lends 0 now` or `no cohort to borrow from`.
    fn lends(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cohort {
            Some(c) if self.limit == Limit::Gpus => {
                write!(f, "cohort {c} lends {} now", self.borrowable)
            }
            Some(c) => write!(
                f,
                "cohort {c} lends {} GPU-hours now",
                format_gpu_hours(self.borrowable)
            ),
            None => f.write_str("no cohort to borrow from"),
        }
    }
}
