//! The SQL front end on any text: parsing and binding give a program or diagnostics with
//! positions, never a panic or a stack overflow, however long or deeply nested the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &[u8]| {
    if let Ok(text) = std::str::from_utf8(text) {
        let _ = weir_lang::compile(text);
    }
});
