//! The helpers that keep peer-chosen strings and numbers in bounds.

use latentcam_wire::{MAX_ID_LEN, MAX_SEQ, MAX_TEXT_LEN, fit_text, valid_device_id};

#[test]
fn device_ids_must_be_printable_and_bounded() {
    assert!(valid_device_id("porch"));
    assert!(valid_device_id("caméra-3 (garage)"));
    assert!(valid_device_id(&"x".repeat(MAX_ID_LEN)));
    assert!(!valid_device_id(""));
    assert!(!valid_device_id(&"x".repeat(MAX_ID_LEN + 1)));
    for forged in [
        "porch\nERROR host compromised",
        "a\rb",
        "\u{1b}[31mred",
        "nul\0",
        "del\u{7f}",
        "c1\u{85}",
    ] {
        assert!(!valid_device_id(forged), "{forged:?} must be refused");
    }
}

#[test]
fn long_texts_are_cut_at_a_character_boundary() {
    assert_eq!(fit_text("short", MAX_TEXT_LEN), "short");
    let long = "é".repeat(MAX_TEXT_LEN); // 2 bytes each
    let cut = fit_text(&long, MAX_TEXT_LEN);
    assert_eq!(cut.len(), MAX_TEXT_LEN);
    let odd = format!("a{long}");
    let cut = fit_text(&odd, MAX_TEXT_LEN);
    assert_eq!(cut.len(), MAX_TEXT_LEN - 1, "never half a character");
    assert!(cut.starts_with('a'));
}

#[test]
fn the_largest_sequence_number_is_exact_in_json() {
    assert_eq!(MAX_SEQ, 9_007_199_254_740_991);
    assert_eq!(MAX_SEQ as f64 as u64, MAX_SEQ);
    assert_ne!((MAX_SEQ + 2) as f64 as u64, MAX_SEQ + 2);
}
