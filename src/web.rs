//! The demo page and the JavaScript client, built into the binary and served by comet at `/`.

use goim_comet::Asset;

/// Every file under `web/` the page loads.
pub fn assets() -> Vec<Asset> {
    vec![
        Asset {
            path: "/index.html",
            content_type: "text/html; charset=utf-8",
            body: include_bytes!("../web/index.html"),
        },
        Asset {
            path: "/demo.css",
            content_type: "text/css; charset=utf-8",
            body: include_bytes!("../web/demo.css"),
        },
        Asset {
            path: "/demo.js",
            content_type: "text/javascript; charset=utf-8",
            body: include_bytes!("../web/demo.js"),
        },
        Asset {
            path: "/goim.js",
            content_type: "text/javascript; charset=utf-8",
            body: include_bytes!("../web/goim.js"),
        },
    ]
}
