//! What `sign`, `verify`, `ledger` and `timestamp` share: the run's memory budget. (Naming
//! each output after its input's place in the input tree is `radveil_pipeline::tree`'s.)

use radveil_part10::MemoryBudget;

/// The memory budget of a run of these commands: the machine's default (see
/// `radveil_pipeline::memory::default_limit`).
pub fn default_budget() -> MemoryBudget {
    MemoryBudget::new(radveil_pipeline::memory::default_limit())
}
