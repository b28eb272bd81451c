//! Generates the Tauri context and the permissions of the app's own commands, so the capability
//! file can grant exactly those commands and nothing else.

fn main() {
    tauri_build::try_build(tauri_build::Attributes::new().app_manifest(
        tauri_build::AppManifest::new().commands(&[
            "status",
            "toggle",
            "get_settings",
            "put_settings",
            "reputation",
            "agent_info",
            "join",
        ]),
    ))
    .expect("tauri-build failed");
}
