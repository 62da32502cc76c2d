//! Secret values the agent holds in memory: wiped when dropped.

use serde_json::Value;

/// `serde_json::Value` cannot be zeroized in place; this wipes the strings it holds on drop.
#[derive(Default)]
pub(crate) struct ValueBox(pub(crate) Value);

impl zeroize::Zeroize for ValueBox {
    fn zeroize(&mut self) {
        fn wipe(v: &mut Value) {
            match v {
                Value::String(s) => s.zeroize(),
                Value::Array(a) => a.iter_mut().for_each(wipe),
                Value::Object(m) => m.values_mut().for_each(wipe),
                _ => {}
            }
        }
        wipe(&mut self.0);
    }
}
