//! What a test sets up in the fake: Apps with their public keys, and their installations on
//! organizations with repositories and permissions.

use std::collections::BTreeMap;

use jsonwebtoken::DecodingKey;

use crate::state::{App, Installation};
use crate::{FakeError, FakeGithub};

impl FakeGithub {
    /// Registers an App with its public keys (PEM, SubjectPublicKeyInfo or PKCS#1).
    pub fn add_app(
        &self,
        app_id: u64,
        client_id: &str,
        public_keys_pem: &[&str],
    ) -> Result<(), FakeError> {
        let keys = public_keys_pem
            .iter()
            .map(|pem| DecodingKey::from_rsa_pem(pem.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        self.shared.lock().apps.insert(
            app_id,
            App {
                id: app_id,
                client_id: client_id.to_owned(),
                slug: format!("keygate-test-{app_id}"),
                keys,
            },
        );
        Ok(())
    }

    /// Installs an App on an organization with the given repositories and permissions; returns
    /// the installation id.
    pub fn install(
        &self,
        app_id: u64,
        org: &str,
        repos: &[&str],
        permissions: &[(&str, &str)],
    ) -> Result<u64, FakeError> {
        let mut g = self.shared.lock();
        if !g.apps.contains_key(&app_id) {
            return Err(FakeError::UnknownApp(app_id));
        }
        g.next_id += 1;
        let id = g.next_id;
        let mut repo_ids = BTreeMap::new();
        for r in repos {
            g.next_id += 1;
            repo_ids.insert((*r).to_owned(), g.next_id);
        }
        let inst = Installation {
            id,
            app_id,
            account: org.to_owned(),
            account_id: id * 7,
            account_type: "Organization".to_owned(),
            repos: repo_ids,
            permissions: permissions
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            suspended: false,
        };
        g.installations.insert(id, inst);
        Ok(id)
    }

    /// Removes an installation (the App gets uninstalled).
    pub fn uninstall(&self, installation_id: u64) {
        self.shared.lock().installations.remove(&installation_id);
    }
}
