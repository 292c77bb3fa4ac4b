//! Every `cep.*` setting, in one place, with typed getters.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

static HIGH_RISK_THRESHOLD: GucSetting<f64> = GucSetting::<f64>::new(0.7);
static MEDIUM_RISK_THRESHOLD: GucSetting<f64> = GucSetting::<f64>::new(0.4);

pub fn init() {
    GucRegistry::define_float_guc(
        c"cep.high_risk_threshold",
        c"Total risk score at or above which a transaction is 'high' risk.",
        c"The seed's RealTimeRiskMonitor uses 0.7.",
        &HIGH_RISK_THRESHOLD,
        0.0,
        1000.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"cep.medium_risk_threshold",
        c"Total risk score at or above which a transaction is 'medium' risk.",
        c"The seed's RealTimeRiskMonitor uses 0.4. Below it a transaction is 'low' risk.",
        &MEDIUM_RISK_THRESHOLD,
        0.0,
        1000.0,
        GucContext::Userset,
        GucFlags::default(),
    );
}

pub fn high_risk_threshold() -> f64 {
    HIGH_RISK_THRESHOLD.get()
}

pub fn medium_risk_threshold() -> f64 {
    MEDIUM_RISK_THRESHOLD.get()
}
