//! `portwatch firewall`: the host firewall rules the model implies for one
//! node, as nftables or PowerShell (see [`crate::firewall`]).

use super::{load, print, Error, Status};
use crate::cli::{FirewallArgs, FirewallDirection, FirewallFormat};
use crate::firewall::{nftables, powershell, Blocks, Direction, Plan};

pub fn firewall(args: &FirewallArgs) -> Result<Status, Error> {
    let loaded = load(&args.site)?;
    let direction = match args.direction {
        FirewallDirection::In => Direction::In,
        FirewallDirection::Out => Direction::Out,
        FirewallDirection::Both => Direction::Both,
    };
    if args.enable_logging && args.format != FirewallFormat::Powershell {
        return Err(Error::Usage(
            "--enable-logging is for --format powershell: nftables rules log their drops already"
                .into(),
        ));
    }
    let blocks = match args.block_all_model_ports {
        true => Blocks::AllKnown,
        false => Blocks::Assigned,
    };
    let plan = Plan::derive(&loaded.policy, &args.node, direction, blocks)?;
    print(&match args.format {
        FirewallFormat::Nftables => nftables::render(&plan),
        FirewallFormat::Powershell if args.enable_logging => {
            format!(
                "{}\n{}",
                powershell::render(&plan),
                powershell::logging(&plan)
            )
        }
        FirewallFormat::Powershell => powershell::render(&plan),
    })?;
    Ok(Status::Clean)
}
