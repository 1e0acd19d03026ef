//! Each platform's home: what a platform does that its providers' data
//! cannot say, one folder (or file) each, implementing the seam
//! (`platform::Platform`). Generic code reaches them only through the seam;
//! this layer may use everything below it (`connections`, `refresh`,
//! `oauth`). Pure facts (presets, names of fields) stay in `src/providers/`.

use crate::app::App;
use crate::platform::Platforms;
use std::sync::Arc;

pub mod gohighlevel;
pub mod instagram;
pub mod wix;

/// The platforms registered at start.
pub fn all() -> Platforms<App> {
    Platforms::new(vec![
        Arc::new(gohighlevel::GoHighLevel),
        Arc::new(instagram::Instagram),
        Arc::new(wix::Wix),
    ])
}
