//! The C header `include/ummunotify.h` and `umn::abi` agree bit for bit.
//!
//! Compiles a small C program against the header with the system `cc` at
//! test time (no build script), runs it, and compares every size, offset
//! and ioctl number it prints with the Rust values.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

use umn::abi::*;

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include "ummunotify.h"
#define P(name, v) printf("%s %llu\n", name, (unsigned long long)(v))
int main(void) {
    P("sizeof_register", sizeof(struct ummunotify_register_ioctl));
    P("off_register_start", offsetof(struct ummunotify_register_ioctl, start));
    P("off_register_end", offsetof(struct ummunotify_register_ioctl, end));
    P("off_register_user_cookie", offsetof(struct ummunotify_register_ioctl, user_cookie));
    P("off_register_flags", offsetof(struct ummunotify_register_ioctl, flags));
    P("off_register_reserved", offsetof(struct ummunotify_register_ioctl, reserved));
    P("sizeof_event", sizeof(struct ummunotify_event));
    P("off_event_type", offsetof(struct ummunotify_event, type));
    P("off_event_flags", offsetof(struct ummunotify_event, flags));
    P("off_event_hint_start", offsetof(struct ummunotify_event, hint_start));
    P("off_event_hint_end", offsetof(struct ummunotify_event, hint_end));
    P("off_event_user_cookie_counter", offsetof(struct ummunotify_event, user_cookie_counter));
    P("EXCHANGE_FEATURES", UMMUNOTIFY_EXCHANGE_FEATURES);
    P("REGISTER_REGION", UMMUNOTIFY_REGISTER_REGION);
    P("UNREGISTER_REGION", UMMUNOTIFY_UNREGISTER_REGION);
    P("INVAL", UMMUNOTIFY_EVENT_TYPE_INVAL);
    P("LAST", UMMUNOTIFY_EVENT_TYPE_LAST);
    P("FLAG_HINT", UMMUNOTIFY_EVENT_FLAG_HINT);
    P("FEATURE_REGION_WORDS", UMMUNOTIFY_FEATURE_REGION_WORDS);
    P("GET_AREA", UMMUNOTIFY_GET_AREA);
    P("sizeof_area", sizeof(struct ummunotify_area));
    P("off_area_length", offsetof(struct ummunotify_area, length));
    P("off_area_max_regions", offsetof(struct ummunotify_area, max_regions));
    P("off_area_first_word", offsetof(struct ummunotify_area, first_word));
    return 0;
}
"#;

#[test]
fn c_header_matches_rust_abi() {
    let include = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include");
    let dir = std::env::temp_dir().join(format!("umn-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("abi.c");
    let exe = dir.join("abi");
    std::fs::write(&src, PROGRAM).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg("-I")
        .arg(&include)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| {
            panic!("running {cc}: {e} (install a C compiler: apt-get install gcc)")
        });
    assert!(
        out.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    let c: HashMap<String, u64> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    type R = ummunotify_register_ioctl;
    type E = ummunotify_event;
    type A = ummunotify_area;
    let rust: [(&str, u64); 24] = [
        ("sizeof_register", size_of::<R>() as u64),
        ("off_register_start", offset_of!(R, start) as u64),
        ("off_register_end", offset_of!(R, end) as u64),
        (
            "off_register_user_cookie",
            offset_of!(R, user_cookie) as u64,
        ),
        ("off_register_flags", offset_of!(R, flags) as u64),
        ("off_register_reserved", offset_of!(R, reserved) as u64),
        ("sizeof_event", size_of::<E>() as u64),
        ("off_event_type", offset_of!(E, type_) as u64),
        ("off_event_flags", offset_of!(E, flags) as u64),
        ("off_event_hint_start", offset_of!(E, hint_start) as u64),
        ("off_event_hint_end", offset_of!(E, hint_end) as u64),
        (
            "off_event_user_cookie_counter",
            offset_of!(E, user_cookie_counter) as u64,
        ),
        ("EXCHANGE_FEATURES", UMMUNOTIFY_EXCHANGE_FEATURES as u64),
        ("REGISTER_REGION", UMMUNOTIFY_REGISTER_REGION as u64),
        ("UNREGISTER_REGION", UMMUNOTIFY_UNREGISTER_REGION as u64),
        ("INVAL", UMMUNOTIFY_EVENT_TYPE_INVAL as u64),
        ("LAST", UMMUNOTIFY_EVENT_TYPE_LAST as u64),
        ("FLAG_HINT", UMMUNOTIFY_EVENT_FLAG_HINT as u64),
        // The extension (umn/kmod): negotiated by feature bit, so a 2010
        // program (features 0) and an older device (nothing granted,
        // ENOTTY for GET_AREA) keep the 2010 ABI.
        (
            "FEATURE_REGION_WORDS",
            UMMUNOTIFY_FEATURE_REGION_WORDS as u64,
        ),
        ("GET_AREA", UMMUNOTIFY_GET_AREA as u64),
        ("sizeof_area", size_of::<A>() as u64),
        ("off_area_length", offset_of!(A, length) as u64),
        ("off_area_max_regions", offset_of!(A, max_regions) as u64),
        ("off_area_first_word", offset_of!(A, first_word) as u64),
    ];
    assert_eq!(c.len(), rust.len(), "C printed {c:?}");
    for (k, v) in rust {
        assert_eq!(c.get(k), Some(&v), "{k}: C {:?} vs Rust {v:#x}", c.get(k));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The numbers themselves, independent of any compiler: `_IOC` layout.
#[test]
fn ioctl_numbers_are_the_seeds() {
    assert_eq!(UMMUNOTIFY_EXCHANGE_FEATURES, 0xc004_5501);
    assert_eq!(UMMUNOTIFY_REGISTER_REGION, 0x4020_5502);
    assert_eq!(UMMUNOTIFY_UNREGISTER_REGION, 0x4008_5503);
    // The extension: _IOR('U', 4, 16 bytes), feature bit 0.
    assert_eq!(UMMUNOTIFY_GET_AREA, 0x8010_5504);
    assert_eq!(UMMUNOTIFY_FEATURE_REGION_WORDS, 1);
}
