//! Types for secret material: zeroized on drop, no `Debug` that prints the value, and equality
//! only in constant time. They live in `coffer-wire`, so that the token formats minted there
//! (`coffer_wire::token_format`) hand out the same type the server keeps tokens in.

pub use coffer_wire::secret::{SecretString, ct_eq};
