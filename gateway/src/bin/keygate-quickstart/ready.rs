//! What the quickstart prints once everything is ready: where each part runs, and curl lines
//! to try (200 with the demo key, 401 without, revoke by curl or the CLI).

use std::path::Path;

use crate::front::Front;
use crate::host::ENVOY_VERSION;
use crate::running::Running;

impl Running {
    /// Prints the addresses, the curl lines and, last, the `ready` line.
    pub(crate) fn print_ready(&self, state_dir: &Path) {
        let (cp_url, token_file) = (
            &self.control_plane.url,
            self.control_plane.token_file.display(),
        );
        let g = self.front.url();
        println!();
        println!(
            "Keygate quickstart is running (state in {}):",
            state_dir.display()
        );
        println!("  control plane  {cp_url}   (admin token in {token_file})");
        println!("  echo upstream  {}", self.echo_url);
        match &self.front {
            Front::Envoy(e) => {
                println!(
                    "  envoy          {g}   (Envoy {ENVOY_VERSION} with the Keygate filter, {})",
                    e.binary.display()
                );
                println!(
                    "  envoy admin    http://{}   (bootstrap {}, log {})",
                    e.admin,
                    e.bootstrap.display(),
                    e.log.display()
                );
            }
            Front::Gateway(_) => {
                println!(
                    "  gateway        {g}   (the Keygate filter in the wasmtime host harness)"
                );
            }
        }
        println!();
        println!("# 200: the upstream echoes the identity headers (x-keygate-*) the filter added");
        println!("curl -s {g}/hello -H 'x-api-key: {}'", self.demo.secret);
        println!("# 401: no key");
        println!("curl -s {g}/hello");
        println!("# revoke the demo key; within about a second the first line answers 401");
        println!(
            "curl -s -X POST {cp_url}/v1/keys/{}/revoke -H \"authorization: Bearer $(cat \
             {token_file})\" -H 'content-type: application/json' -d '{{\"reason\":\"quickstart\"}}'",
            self.demo.id,
        );
        println!("# the same with the CLI");
        println!(
            "KEYGATE_URL={cp_url} KEYGATE_TOKEN=\"$(cat {token_file})\" cargo run -q -p \
             keygate-control-plane --bin keygate -- keys revoke {}",
            self.demo.id
        );
        println!();
        println!("ready; press Ctrl-C to stop");
    }
}
