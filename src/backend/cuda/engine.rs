use crate::backend::BackendPair;
use crate::bundle::Bundle;
use crate::config::EngineConfig;
use crate::error::Result;
pub(super) fn build(_c: &EngineConfig, _b: &Bundle) -> Result<BackendPair> {
    Err(super::unavailable("todo"))
}
