//! DEL (see the module contract of [`super`]).
use super::*;

pub fn del(conf: &NetConf, p: &Params) -> Result<(), CniError> {
    // IPAM first, as the reference plugins do; its failure is reported after the rest is done.
    let ipam = ipam_of(conf, p).and_then(|i| i.del());
    if !p.netns.is_empty() {
        match rtnl::open_in(Path::new(&p.netns)) {
            Ok(mut r) => {
                link::delete(&mut r, &p.ifname).map_err(netlink_err("deleting the pod's interface"))?;
            }
            Err(RtnlError::Netns(NetnsError::Missing(_))) => {}
            Err(e) => return Err(netlink_err("opening netlink in the container's namespace")(e)),
        }
    }
    cni_records::remove(&conf.data_dir(), &p.container_id, &p.ifname);
    ipam
}
