//! GC (see the module contract of [`super`]).
use super::*;

pub fn gc(conf: &NetConf, p: &Params) -> Result<(), CniError> {
    let ipam = ipam_of(conf, p)?;
    let valid = conf.valid_attachments();
    let dir = conf.data_dir();
    let records = cni_records::list(&dir).map_err(|e| CniError::from_source(code::IO_FAILURE, "reading the attachment records", &e))?;
    let mut errors = Vec::new();
    for r in records.iter().filter(|r| !valid.iter().any(|v| v.container_id == r.container_id && v.ifname == r.ifname)) {
        match rtnl::open_in(Path::new(&r.netns)) {
            Ok(mut nl) => {
                if let Err(e) = link::delete(&mut nl, &r.ifname) {
                    errors.push(format!("{}:{}: deleting {}: {}", r.container_id, r.ifname, r.ifname, chain(&e)));
                }
            }
            Err(RtnlError::Netns(NetnsError::Missing(_))) => {}
            Err(e) => errors.push(format!("{}:{}: {}", r.container_id, r.ifname, chain(&e))),
        }
        match ipam.del_for(&r.container_id, &r.ifname) {
            Ok(()) => cni_records::remove(&dir, &r.container_id, &r.ifname),
            Err(e) => errors.push(format!("{}:{}: IPAM DEL: {e}", r.container_id, r.ifname)),
        }
    }
    if let Err(e) = ipam.gc() {
        errors.push(format!("IPAM GC: {e}"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(code::TRY_AGAIN_LATER, "GC left stale attachments", errors.join("; ")))
    }
}
