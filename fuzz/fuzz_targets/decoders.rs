//! The event decoders on any payload: JSON lines, CSV (with and without a header) and DEBS 2012
//! records give rows or reasons, never a panic.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    let _ = weir_connectors::codec::decode_json(payload);
    let mut out = Vec::new();
    weir_connectors::debs::decode_line(payload, &mut out);
    for options in [
        &[("format", "csv")][..],
        &[("format", "csv"), ("header", "a,b,c")][..],
        &[("format", "json")][..],
    ] {
        let options: BTreeMap<String, String> = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Ok(mut d) = weir_connectors::codec::MessageDecoder::new(&options) {
            d.decode(payload, &mut out);
        }
    }
});
