//! `static`: the ranges written in the config, exactly as host-local reads them.

use crate::cni::config::IpamConf;
use crate::cni::error::{CniError, CniResult};
use crate::ipam::pool::{Range, RangeSet};

/// The legacy single range (if any) comes first, then `ranges`, as in host-local.
pub fn range_sets(ipam: &IpamConf) -> CniResult<Vec<RangeSet>> {
    let mut sets: Vec<RangeSet> = Vec::new();
    if let Some(subnet) = &ipam.subnet {
        let (start, end, gw) = (ipam.range_start.as_deref(), ipam.range_end.as_deref(), ipam.gateway.as_deref());
        sets.push(vec![Range::new("ipam", subnet, start, end, gw)?]);
    }
    for (i, set) in ipam.ranges.iter().enumerate() {
        let field = format!("ipam.ranges[{i}]");
        if set.is_empty() {
            return Err(CniError::config(&field, "is an empty range set"));
        }
        let ranges = set
            .iter()
            .enumerate()
            .map(|(j, r)| Range::from_conf(&format!("{field}[{j}]"), r))
            .collect::<CniResult<RangeSet>>()?;
        sets.push(ranges);
    }
    if sets.is_empty() {
        return Err(CniError::config("ipam.ranges", "no ranges are configured (set ranges, or subnet)"));
    }
    Ok(sets)
}
