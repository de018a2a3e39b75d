//! The readers of bytes that arrive from other nodes or from operators' files: rule packages
//! (moves and attaches) and checkpoints (imports, restarts) are refused with a reason, never a
//! panic or an allocation sized by a length field.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = weir_node::node::Package::decode(bytes);
    let _ = weir_state::Checkpoint::decode(bytes);
});
