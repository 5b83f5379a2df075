use super::DeviceInfo;
use crate::config::EngineConfig;
pub(super) fn probe(_c: &EngineConfig) -> Result<DeviceInfo, String> {
    Err("todo".into())
}
