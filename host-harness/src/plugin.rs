//! A compiled filter module plus its linker: checked once, instantiated per worker.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use wasmtime::{Config, Engine, ExternType, InstancePre, Linker, Module, Store};

use crate::error::{HarnessError, Result};
use crate::state::{Env, HostState};

/// The proxy-wasm ABI version a module declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum AbiVersion {
    /// `proxy_abi_version_0_2_1`.
    V0_2_1,
    /// `proxy_abi_version_0_2_0` (same callbacks for HTTP filters).
    V0_2_0,
}

/// A validated, compiled module whose imports are all provided by this host.
/// `Send + Sync`: share one across worker threads with an `Arc`.
pub struct Plugin {
    pub(crate) engine: Engine,
    pub(crate) pre: InstancePre<HostState>,
    abi: AbiVersion,
    /// The module linked to the counting host functions, made when a harness first counts.
    counting: OnceLock<std::result::Result<Counting, String>>,
}

/// The module linked to host functions that count their calls, and the counters' names.
pub(crate) struct Counting {
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) names: Arc<[String]>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("abi", &self.abi)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Compiles and checks a module (binary or WAT text): valid wasm, an ABI version export,
    /// and every import satisfiable (otherwise the error lists all missing names).
    pub fn load(bytes: &[u8]) -> Result<Self> {
        let engine = shared_engine()?;
        let module = compile_cached(&engine, bytes)?;
        let abi = if module.get_export("proxy_abi_version_0_2_1").is_some() {
            AbiVersion::V0_2_1
        } else if module.get_export("proxy_abi_version_0_2_0").is_some() {
            AbiVersion::V0_2_0
        } else {
            return Err(HarnessError::MissingAbiVersion);
        };
        let mut linker = Linker::new(&engine);
        crate::hostcalls::add_to_linker(&mut linker)
            .map_err(|e| HarnessError::Engine(format!("{e:#}")))?;

        let mut probe = Store::new(&engine, HostState::new(Arc::new(Env::placeholder()), 0));
        let mut missing = Vec::new();
        for import in module.imports() {
            let name = format!("{}.{}", import.module(), import.name());
            match (linker.get_by_import(&mut probe, &import), import.ty()) {
                (Some(provided), ExternType::Func(wanted)) => {
                    let matches = matches!(provided.ty(&probe), ExternType::Func(ref have) if have.matches(&wanted));
                    if !matches {
                        missing.push(format!("{name} (signature differs)"));
                    }
                }
                (Some(_), _) => missing.push(format!("{name} (not a function)")),
                (None, _) => missing.push(name),
            }
        }
        if !missing.is_empty() {
            return Err(HarnessError::UnsatisfiedImports(missing));
        }
        for required in ["memory"] {
            if module.get_export(required).is_none() {
                return Err(HarnessError::MissingExport(required.to_owned()));
            }
        }
        if module.get_export("proxy_on_memory_allocate").is_none()
            && module.get_export("malloc").is_none()
        {
            return Err(HarnessError::MissingExport(
                "proxy_on_memory_allocate".to_owned(),
            ));
        }
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| HarnessError::InvalidModule(format!("{e:#}")))?;
        Ok(Self {
            engine,
            pre,
            abi,
            counting: OnceLock::new(),
        })
    }

    /// The module linked to the counting host functions (linked on first use).
    pub(crate) fn counting(&self) -> Result<&Counting> {
        self.counting
            .get_or_init(|| {
                let mut linker = Linker::new(&self.engine);
                let names = crate::hostcalls::add_counting_to_linker(&mut linker)
                    .map_err(|e| format!("{e:#}"))?;
                let pre = linker
                    .instantiate_pre(self.pre.module())
                    .map_err(|e| format!("{e:#}"))?;
                Ok(Counting { pre, names })
            })
            .as_ref()
            .map_err(|e| HarnessError::Engine(e.clone()))
    }

    /// Reads and loads a module file.
    pub fn load_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| HarnessError::ReadModule {
            path: path.to_owned(),
            source,
        })?;
        Self::load(&bytes)
    }

    /// The ABI version the module declares.
    pub fn abi_version(&self) -> AbiVersion {
        self.abi
    }
}

/// One engine per process: modules compiled by it can be shared by every harness.
fn shared_engine() -> Result<Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine.clone());
    }
    let mut config = Config::new();
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    // `KEYGATE_HARNESS_PERFMAP=1` writes /tmp/perf-<pid>.map so `perf report` names the guest's
    // functions (see the README's "Profiling a filter").
    if std::env::var_os("KEYGATE_HARNESS_PERFMAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config).map_err(|e| HarnessError::Engine(format!("{e:#}")))?;
    Ok(ENGINE.get_or_init(|| engine).clone())
}

/// Compiles a module once per process (keyed by a hash of its bytes and its length).
fn compile_cached(engine: &Engine, bytes: &[u8]) -> Result<Module> {
    static MODULES: OnceLock<Mutex<HashMap<(u64, usize), Module>>> = OnceLock::new();
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    let key = (hasher.finish(), bytes.len());
    let cache = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(module) = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return Ok(module.clone());
    }
    let module =
        Module::new(engine, bytes).map_err(|e| HarnessError::InvalidModule(format!("{e:#}")))?;
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, module.clone());
    Ok(module)
}
