//! Where windows live. Two stores implement [`Store`] with the same semantics: [`MemoryStore`]
//! (one process, for development) and [`RedisStore`] (shared by every limiter replica, single
//! node or Cluster). The tests run one body against both.

mod common;
mod memory;
mod redis;

pub(crate) use self::common::unix_ms;
pub use self::common::{Decision, Store, StoreError};
pub use self::memory::MemoryStore;
pub use self::redis::{RedisConfigError, RedisStore, RedisTarget, RedisTls};
