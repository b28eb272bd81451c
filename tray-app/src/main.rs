//! The `ambient-tray` binary: everything lives in the library (`tray_app::run`).
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    tray_app::run();
}
