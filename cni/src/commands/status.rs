//! STATUS (see the module contract of [`super`]).
use super::*;

pub fn status(conf: &NetConf, p: &Params) -> Result<(), CniError> {
    let socket = conf.control_socket();
    switch_port::answers(&socket).map_err(|e| CniError::from_source(code::NOT_AVAILABLE, "the switch is not running", &e))?;
    // Without an IPAM section there is no delegate to ask.
    if let Ok((kind, raw)) = conf.ipam_config() {
        Ipam::find(&kind, &p.path, raw)?.status()?;
    }
    Ok(())
}
