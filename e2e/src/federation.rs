//! A hub and its member clusters, started side by side, with the gpufed CRDs installed where they
//! belong (hub kinds on the hub, `GpuNode` on members).

use std::time::{Duration, Instant};

use futures::future::try_join_all;
use gpufed_crds::{Side, crds_for};

use crate::{Cluster, ClusterSpec, Error, Tools};

/// A running federation.
pub struct Federation {
    /// The hub cluster (etcd, apiserver, controller-manager).
    pub hub: Cluster,
    /// The member clusters, in the order given.
    pub members: Vec<Cluster>,
    /// Wall time to start everything and install the CRDs.
    pub started_in: Duration,
}

impl Federation {
    /// Starts the hub (`hub`: usually API-only plus controller-manager) and `members` in parallel and
    /// installs the CRDs.
    pub async fn start(
        tools: &Tools,
        hub: ClusterSpec,
        members: Vec<ClusterSpec>,
    ) -> Result<Federation, Error> {
        let t0 = Instant::now();
        let hub_fut = async {
            let c = Cluster::start(tools, &hub).await?;
            c.install_crds(&crds_for(Side::Hub)).await?;
            Ok::<_, Error>(c)
        };
        let members_fut = try_join_all(members.iter().map(|spec| async move {
            let c = Cluster::start(tools, spec).await?;
            c.install_crds(&crds_for(Side::Member)).await?;
            Ok::<_, Error>(c)
        }));
        let (hub, members) = futures::try_join!(hub_fut, members_fut)?;
        Ok(Federation {
            hub,
            members,
            started_in: t0.elapsed(),
        })
    }

    /// The member named `name`.
    pub fn member(&self, name: &str) -> Option<&Cluster> {
        self.members.iter().find(|m| m.name() == name)
    }

    /// The member named `name`, mutably (to stop its processes).
    pub fn member_mut(&mut self, name: &str) -> Option<&mut Cluster> {
        self.members.iter_mut().find(|m| m.name() == name)
    }
}
