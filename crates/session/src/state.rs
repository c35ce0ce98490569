//! State shared by every session: configuration, user secrets, topology and cancel keys.

use std::collections::HashMap;
use std::sync::Arc;

use meridian_config::{AuthMethod, Config};
use meridian_upstream::TopologyHandle;
use meridian_wire::auth::ScramSecret;
use meridian_wire::WireError;

use crate::cancel::CancelRegistry;

/// SCRAM iteration count for the verifiers Meridian derives from configured passwords.
const SCRAM_ITERATIONS: u32 = 4096;

/// A configured user, ready for authentication.
#[derive(Debug)]
pub struct UserAuth {
    /// The password, also used upstream.
    pub password: String,
    /// How the client must authenticate.
    pub method: AuthMethod,
    /// SCRAM verifier derived once at startup (PBKDF2 is deliberately slow).
    pub scram: ScramSecret,
}

/// Everything a session needs from the rest of the proxy.
pub struct ProxyState {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Users by name.
    pub users: HashMap<String, UserAuth>,
    /// Verifier used to run a full, failing exchange for unknown users, so that they cannot be
    /// told apart from a wrong password.
    pub decoy: ScramSecret,
    /// The topology snapshot.
    pub topology: TopologyHandle,
    /// Cancel keys of live sessions.
    pub cancels: Arc<CancelRegistry>,
}

impl ProxyState {
    /// Builds the shared state, deriving SCRAM verifiers for every user.
    pub fn new(config: Arc<Config>, topology: TopologyHandle) -> Result<Self, WireError> {
        let mut users = HashMap::new();
        for u in &config.users {
            let password = u.password.clone().unwrap_or_default();
            let salt: [u8; 16] = rand::random();
            let scram = ScramSecret::from_password(&password, &salt, SCRAM_ITERATIONS)?;
            users.insert(
                u.name.clone(),
                UserAuth {
                    password,
                    method: u.auth,
                    scram,
                },
            );
        }
        let decoy_password: [u8; 16] = rand::random();
        let decoy_salt: [u8; 16] = rand::random();
        let decoy = ScramSecret::from_password(
            &format!("{decoy_password:?}"),
            &decoy_salt,
            SCRAM_ITERATIONS,
        )?;
        Ok(ProxyState {
            config,
            users,
            decoy,
            topology,
            cancels: Arc::new(CancelRegistry::default()),
        })
    }
}
