//! Untrusted layer bytes through the tar reader and the member path check:
//! every archive must end in members or an error, with bounded memory.
#![no_main]

use std::io::Read;

use husk_agent::unpack::apply::normalize;
use husk_agent::unpack::tar::TarReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut tar = TarReader::new(data);
    let mut sink = [0u8; 4096];
    for _ in 0..1024 {
        match tar.next_header() {
            Ok(Some(h)) => {
                let _ = normalize(&h.path);
                let _ = normalize(&h.link);
                let mut body = tar.body();
                while let Ok(n) = body.read(&mut sink) {
                    if n == 0 {
                        break;
                    }
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
});
