//! PodCIDRPool custom resource (in progress).
