//! veer's mesh identity for east-west mTLS: seed 003's shared root and per-cluster intermediates, node certificates, and the rustls configs that require them.
//!
//! Layout on disk (as seed 003 makes it, plus the node files):
//!
//! ```text
//! DIR/root-cert.pem, root-key.pem         the shared root CA (O=Istio, CN=Root CA)
//! DIR/<cluster>/ca-cert.pem, ca-key.pem    the cluster's intermediate (CA:true, pathlen:0, L=<cluster>)
//! DIR/<cluster>/cert-chain.pem             intermediate, then root (Istio's `cacerts`)
//! DIR/<cluster>/root-cert.pem              a copy of the root: what the node trusts
//! DIR/<cluster>/node-cert.pem              node certificate, then intermediate: what the node presents
//! DIR/<cluster>/node-key.pem               the node's key (PKCS#8)
//! ```
//!
//! A node of cluster C is `C.cluster.veer` (SAN DNS) and `spiffe://veer/cluster/C` (SAN URI).
//! Keys veer makes are ECDSA P-256; roots and intermediates made by openssl (RSA) are read too.
//!
//! Layout of the crate: `names` (the identity convention), `files` (PEM in and out, with
//! errors that say which command makes a file), `issue` (making certificates), `identity`
//! (loading and verifying a node's files into rustls configs), `serving` (the certificates Gateway
//! listeners present to clients), `inspect` (showing them), `date`
//! (how both write a certificate's dates).

#![forbid(unsafe_code)]

mod date;
mod error;
mod files;
mod identity;
mod inspect;
mod issue;
mod names;
mod serving;

pub use error::{ErrorKind, PkiError};
pub use files::{CA_CERT, CA_KEY, CERT_CHAIN, NODE_CERT, NODE_KEY, ROOT_CERT, ROOT_KEY};
pub use identity::MeshIdentity;
pub use inspect::{inspect, summarize, CertSummary, Inspection};
pub use issue::{create_intermediate, create_mesh, create_node, create_root};
pub use names::{
    dns_name, names_cluster, peer_cluster, server_name, spiffe_id, try_server_name, validate_cluster_name, DNS_SUFFIX, URI_PREFIX,
};
pub use serving::{name_covers, serving_cert, Part, ServingCert};
