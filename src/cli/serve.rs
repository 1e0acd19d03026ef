//! `tether serve` (the default): prepare, bootstrap, listen, run until
//! signalled.

use crate::config::Settings;
use crate::startup::{self, Application, Use};

pub(super) fn serve(settings: Settings) -> Result<(), String> {
    let ctx = startup::prepare_for(settings, Use::Serve)?;
    // While it runs, `tether restore` refuses to replace the SQLite file.
    let _presence = crate::backup::Presence::hold(&ctx.settings)?;
    let first = startup::bootstrap(&ctx)?;
    startup::store_spilled(&ctx)?;
    actix_web::rt::System::new().block_on(async move {
        let listener = std::net::TcpListener::bind(ctx.settings.bind)
            .map_err(|e| format!("cannot listen on {}: {e}", ctx.settings.bind))?;
        // Last, so that a refused start leaves no key check behind.
        startup::record_key_checks(&ctx)?;
        let app = Application::build_on(ctx.clone(), listener)
            .map_err(|e| format!("cannot listen on {}: {e}", ctx.settings.bind))?;
        let s = &ctx.settings;
        let env = if s.is_production() {
            "production"
        } else {
            "development"
        };
        println!(
            "Tether is listening on http://{}:{} ({}, {env})",
            s.bind.ip(),
            app.port(),
            ctx.backend
        );
        match first {
            Some(admin) => {
                println!(
                    "First start: created tenant '{}' and its admin. Log in at {}/login",
                    admin.tenant,
                    s.base_url()
                );
                println!("  email:    {}", admin.email);
                println!("  password: {}", admin.password.expose());
                println!("  (the password is shown only this once)");
            }
            None => println!(
                "Log in at {}/login (add an admin with `tether user add`)",
                s.base_url()
            ),
        }
        app.run_until_signalled().await.map_err(|e| e.to_string())
    })
}
