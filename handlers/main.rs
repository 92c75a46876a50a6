//! The `keyturn` command line: a thin layer over the library that reads settings, starts
//! telemetry and calls in.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use keyturn::config::{
    AuditCommandSettings, Environment, SETTINGS, Settings, looks_like_secret_material,
};
use keyturn::functions::secret_endpoint;
use keyturn::host::router::router;
use keyturn::host::server;
use keyturn::local::{dev, directory_cli, plan_cli, vault_cli};
use keyturn::mtls::verify_cli::{self, CertVerifyArgs};
use keyturn::{package, startup, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "keyturn",
    version,
    about = "Secret lifecycle for Azure: rotate before expiry, deliver over mTLS, audit everything."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the functions to the Azure Functions host (what host.json starts).
    Serve {
        /// Loopback port to listen on; the host passes it in FUNCTIONS_CUSTOMHANDLER_PORT.
        #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT")]
        port: u16,
    },
    /// Run the whole system on this machine with embedded backends (local mode).
    Dev {
        /// Where the embedded store, the dev PKI and the demo live.
        #[arg(long, env = "KEYTURN_DATA_DIR", default_value = ".keyturn")]
        data_dir: PathBuf,
        /// Bootstrap if needed, run one sweep, drain the jobs due now, print a JSON summary
        /// and exit (0 only if nothing failed).
        #[arg(long)]
        once: bool,
        /// The project root holding host.json and function-definitions/.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Where the secret endpoint terminates TLS.
        #[arg(long, default_value = "127.0.0.1:8443")]
        tls_address: String,
        /// Where the Event Grid ingress listens.
        #[arg(long, default_value = "127.0.0.1:7071")]
        ingress_address: String,
        /// Where the local alert receiver listens (loopback; port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        alerts_address: String,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Work with the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Work with client certificates.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// The local vault of `keyturn dev`.
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
    /// The local directory of `keyturn dev`.
    Directory {
        #[command(subcommand)]
        command: DirectoryCommand,
    },
    /// Every managed object: when it is due and why, the lifetime its next version would
    /// get, its overlap and retirement, the rotations proving a new credential, and the
    /// objects that are failing. Reads the local store of `keyturn dev`, or, with --vault
    /// or KEYTURN_BACKEND=azure, the vaults in Azure (and the applications they name, in
    /// Graph) with your Azure CLI sign-in. Read-only: nothing is queued, written or audited.
    Plan {
        /// The local store to read (default: KEYTURN_DATA_DIR, then .keyturn); given, it
        /// is read even where KEYTURN_BACKEND=azure.
        #[arg(long, conflicts_with = "vault")]
        data_dir: Option<PathBuf>,
        /// A vault to read in Azure (repeat for several), besides KEYTURN_VAULTS.
        #[arg(long)]
        vault: Vec<String>,
        #[arg(long, value_enum, default_value_t = PlanFormat::Table)]
        format: PlanFormat,
    },
    /// Every credential discovery found (vault secrets, certificates and keys; application
    /// and service-principal credentials) with its expiry, owners and whether keyturn
    /// manages it, from the local store or, with your Azure CLI sign-in, the inventory
    /// table. Metadata only: the inventory holds no secret value. Exit 2 when it cannot be
    /// read.
    Inventory(InventoryArgs),
    /// Check the inventory and the audit log against keyturn's rule catalogue (CIS Azure,
    /// NIST SP 800-53, PCI DSS, SOC 2, ISO/IEC 27001, HIPAA): each finding with its rule,
    /// subject, scope, severity and controls, then scores per framework and per scope.
    /// Evidence for an audit, not a certification. Exit 0 when nothing is open, 1 when
    /// findings are open, 2 when the inputs cannot be read or an option is wrong.
    Compliance(ComplianceArgs),
    /// The auditor's evidence package for a period: CSV populations, the audit log's
    /// extract with its signed checkpoints, and a manifest signed with the audit
    /// checkpoint key; and its verification, offline.
    Evidence {
        #[command(subcommand)]
        command: EvidenceCommand,
    },
    /// Build the deployable zip: host.json, the function definitions and this binary.
    Package {
        /// Where to write the zip.
        #[arg(long, default_value = "dist/keyturn.zip")]
        out: PathBuf,
        /// The handler binary to ship (default: this executable; build it with --release).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// The project root holding host.json and function-definitions/.
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PlanFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (secrets redacted); exit 1 if it is invalid.
    Check,
}

#[derive(Debug, Subcommand)]
enum VaultCommand {
    /// List secrets and certificates with their versions, tags and expiry (never values).
    List {
        #[arg(long, env = "KEYTURN_DATA_DIR", default_value = ".keyturn")]
        data_dir: PathBuf,
    },
    /// Add a secret version; the value is read from stdin.
    Set {
        name: String,
        /// key=value pairs, repeated or comma-separated.
        #[arg(long)]
        tags: Vec<String>,
        /// RFC 3339 time, or +<n>d / +<n>h / +<n>m from now.
        #[arg(long)]
        expires: Option<String>,
        #[arg(long)]
        content_type: Option<String>,
        #[arg(long, env = "KEYTURN_DATA_DIR", default_value = ".keyturn")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum DirectoryCommand {
    /// Show or set an app management policy: the longest lifetime a new password
    /// credential may have, for the tenant (the default) or for one application (--app),
    /// whose own policy replaces the tenant's, as in Entra. Prints every policy as JSON.
    Policy {
        /// The application's appId; without it, the tenant's default policy.
        #[arg(long)]
        app: Option<String>,
        /// Limit new passwords to this many days (Graph's `passwordLifetime`).
        #[arg(long, conflicts_with = "clear")]
        max_password_days: Option<u32>,
        /// The policy's display name, shown where it caps a credential.
        #[arg(long, requires = "max_password_days")]
        name: Option<String>,
        /// Remove the policy.
        #[arg(long)]
        clear: bool,
        #[arg(long, env = "KEYTURN_DATA_DIR", default_value = ".keyturn")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Run the `chain` policy on a certificate: prints one JSON object; exit 0 accepted,
    /// 1 rejected, 2 bad usage or unreadable input.
    Verify(CertVerifyArgs),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk every chain of the audit log and check it against the signed checkpoints;
    /// report the first break with the first position it affects. Exit 0 intact, 1
    /// broken, 2 when the log, its checkpoints or the key cannot be read.
    Verify {
        /// The local store's data directory (default KEYTURN_DATA_DIR, else .keyturn);
        /// given, the SQLite store there is verified whatever else is set.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// A file of public keys that check the checkpoints' signatures, each
        /// checkpoint with the key its key id names: a JSON Web Key (what `az keyvault
        /// key show` prints), a JSON Web Key Set, or SPKI PEM (`az keyvault key download
        /// --encoding PEM`); repeat for each key version. Local mode writes
        /// audit-signing.pub.jwk beside the store. Default: the local keys beside the
        /// store, or each version of the Key Vault key the settings name.
        #[arg(long)]
        public_key: Vec<PathBuf>,
    },
    /// Print entries for a terminal (default `--format table`), every writer's chain in
    /// turn, oldest first in each; page with --from-chain, --from-sequence and --limit. Exit 2 when the log cannot be read.
    List(AuditReadArgs),
    /// Print entries for other tools (default `--format json`: one object per line per
    /// entry, every field its hash covers). Exit 2 when the log cannot be read.
    Export(AuditReadArgs),
}

#[derive(Debug, Subcommand)]
enum EvidenceCommand {
    /// Write the package for --from .. --to into --out, from the local store (--data-dir,
    /// KEYTURN_DATA_DIR, else .keyturn) or, where the settings name the audit table, from
    /// Azure with your Azure CLI sign-in. Prints what it wrote as JSON. Exit 0 written, 2
    /// when it cannot be (nothing is left at --out then).
    Export {
        /// The local store's data directory; given, it is read whatever else is set.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The period's first day (2026-11-01, from midnight UTC) or instant (RFC 3339).
        #[arg(long)]
        from: String,
        /// The period's last day (2026-11-30, included whole) or the instant it ends
        /// (RFC 3339, excluded).
        #[arg(long)]
        to: String,
        /// Where to write the zip.
        #[arg(long)]
        out: PathBuf,
        /// A public key file (JSON Web Key, Key Set or PEM; repeat for several) to check
        /// the checkpoints with, instead of the local keys or the Key Vault key versions
        /// the settings name.
        #[arg(long)]
        public_key: Vec<PathBuf>,
        /// The exceptions register (JSON, as `keyturn compliance --exceptions` reads it).
        /// Default: compliance-exceptions.json in the data directory, when it exists; in
        /// Azure, the blob KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB names, when set.
        #[arg(long)]
        exceptions: Option<PathBuf>,
    },
    /// Check a package with the zip and a public key alone: the manifest's signature,
    /// every file's SHA-256, missing and added files, and the audit extract. Prints a
    /// JSON report; exit 0 intact, 1 when something fails (each named on stderr), 2 when
    /// the package or the key cannot be read.
    Verify {
        /// The package (a zip written by `keyturn evidence export`).
        package: PathBuf,
        /// The audit checkpoint key's public half (JSON Web Key, Key Set or PEM; repeat
        /// for several key versions), obtained from the organisation. Without it the keys
        /// inside the package are used, which proves the files belong together but not
        /// who signed them.
        #[arg(long)]
        public_key: Vec<PathBuf>,
    },
}

/// Where the audit log is, which entries to print and how.
#[derive(Debug, clap::Args)]
struct AuditReadArgs {
    /// The local store's data directory (default KEYTURN_DATA_DIR, else .keyturn).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Read this Azure table (default KEYTURN_AUDIT_TABLE) with your Azure CLI sign-in.
    #[arg(long)]
    table: Option<String>,
    /// The Table service endpoint (default KEYTURN_TABLE_ENDPOINT),
    /// https://ACCOUNT.table.core.windows.net/.
    #[arg(long)]
    table_endpoint: Option<String>,
    /// Entries stamped at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Entries stamped before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Entries with this action (repeat for several): secret.read, rotation.planned, ...
    #[arg(long)]
    action: Vec<String>,
    /// Entries naming this vault, secret, version, app id, key id or thumbprint.
    #[arg(long)]
    object: Option<String>,
    /// Entries by this actor: a function name or an identity (`sha256:<thumbprint>`).
    #[arg(long)]
    identity: Option<String>,
    /// succeeded, failed, denied or skipped.
    #[arg(long)]
    outcome: Option<String>,
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Start in this chain (a writer's chain name, as the CHAIN column shows); chains
    /// before it are skipped. Default: the first.
    #[arg(long)]
    from_chain: Option<String>,
    /// Start at this position (in --from-chain, else in the first chain).
    #[arg(long, default_value_t = 1)]
    from_sequence: u64,
    /// Print at most this many entries; stderr then names the --from-chain and
    /// --from-sequence of the next page.
    #[arg(long)]
    limit: Option<u64>,
}

/// Where the inventory is, which credentials to print and how.
#[derive(Debug, clap::Args)]
struct InventoryArgs {
    /// The local store's data directory (default KEYTURN_DATA_DIR, else .keyturn).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Read this Azure table (default KEYTURN_INVENTORY_TABLE) with your Azure CLI sign-in.
    #[arg(long)]
    table: Option<String>,
    /// The Table service endpoint (default KEYTURN_TABLE_ENDPOINT),
    /// https://ACCOUNT.table.core.windows.net/.
    #[arg(long)]
    table_endpoint: Option<String>,
    /// Only credentials expiring within this span (30d, 12h), expired ones included.
    #[arg(long)]
    expiring: Option<String>,
    /// Only credentials keyturn does not manage.
    #[arg(long)]
    unmanaged: bool,
    /// Only credentials this owner (UPN, mail or display name) or keyturn-owner tag names.
    #[arg(long)]
    owner: Option<String>,
    /// Only credentials of this source: vault, application or service_principal.
    #[arg(long)]
    source: Option<String>,
    #[arg(long, value_enum, default_value_t = FormatArg::Table)]
    format: FormatArg,
}

/// Where the inventory is, which rules and thresholds, which exceptions, how to print.
#[derive(Debug, clap::Args)]
struct ComplianceArgs {
    /// The local store's data directory (default KEYTURN_DATA_DIR, else .keyturn).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Read this Azure inventory table (default KEYTURN_INVENTORY_TABLE) with your Azure
    /// CLI sign-in; the audit log is the one the audit settings name.
    #[arg(long)]
    table: Option<String>,
    /// The Table service endpoint (default KEYTURN_TABLE_ENDPOINT),
    /// https://ACCOUNT.table.core.windows.net/.
    #[arg(long)]
    table_endpoint: Option<String>,
    /// Only the rules mapped to this framework, and only its controls: cis-azure,
    /// nist-800-53, pci-dss, soc2, iso-27001 or hipaa.
    #[arg(long)]
    framework: Option<String>,
    /// The exceptions register (JSON). Default: reading a table, the blob
    /// KEYTURN_COMPLIANCE_EXCEPTIONS_BLOB names, when set (as `keyturn evidence export`
    /// reads it); else compliance-exceptions.json in the data directory, when it exists.
    #[arg(long)]
    exceptions: Option<PathBuf>,
    /// The longest lifetime of one kind, as KIND=SPAN (repeat for several kinds):
    /// secret=365d, certificate=398d, key=730d, password_credential=365d,
    /// key_credential=398d by default.
    #[arg(long)]
    max_lifetime: Vec<String>,
    /// Longest time since a credential's current version was created (default 365d).
    #[arg(long)]
    rotation_period: Option<String>,
    /// Most active credentials one application may hold (default 2).
    #[arg(long)]
    credential_limit: Option<String>,
    /// An expiry this close counts as expiring (default 30d).
    #[arg(long)]
    expiring: Option<String>,
    /// How far back the audit rules read (default 30d).
    #[arg(long)]
    period: Option<String>,
    /// Do not record this run's scores as the latest sweep's trend point (a run limited
    /// with --framework is never recorded).
    #[arg(long)]
    no_record: bool,
    #[arg(long, value_enum, default_value_t = ComplianceFormat::Table)]
    format: ComplianceFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ComplianceFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Table,
    Json,
    Csv,
}

/// keyturn allocates small, short-lived buffers on one thread and frees many of them on
/// another (the audit writer frees what request tasks built); mimalloc's per-thread free
/// lists do that without glibc's arena locks. Measured with `benches/endpoint.rs`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { port } => runtime().block_on(serve(port)),
        Command::Dev {
            data_dir,
            once,
            root,
            tls_address,
            ingress_address,
            alerts_address,
        } => runtime().block_on(dev(
            data_dir,
            once,
            root,
            tls_address,
            ingress_address,
            alerts_address,
        )),
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check(),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    data_dir,
                    public_key,
                },
        } => runtime().block_on(audit_verify(data_dir, public_key)),
        Command::Audit {
            command: AuditCommand::List(args),
        } => runtime().block_on(audit_read(args, FormatArg::Table)),
        Command::Audit {
            command: AuditCommand::Export(args),
        } => runtime().block_on(audit_read(args, FormatArg::Json)),
        Command::Evidence {
            command:
                EvidenceCommand::Export {
                    data_dir,
                    from,
                    to,
                    out,
                    public_key,
                    exceptions,
                },
        } => runtime().block_on(evidence_export(
            data_dir, &from, &to, &out, public_key, exceptions,
        )),
        Command::Evidence {
            command:
                EvidenceCommand::Verify {
                    package,
                    public_key,
                },
        } => evidence_verify(&package, &public_key),
        Command::Package { out, binary, root } => package_command(&root, binary, &out),
        Command::Vault { command } => runtime().block_on(vault_command(command)),
        Command::Directory { command } => runtime().block_on(directory_command(command)),
        Command::Plan {
            data_dir,
            vault,
            format,
        } => runtime().block_on(plan_command(data_dir, &vault, format)),
        Command::Inventory(args) => runtime().block_on(inventory_command(args)),
        Command::Compliance(args) => runtime().block_on(compliance_command(args)),
        Command::Cert {
            command: CertCommand::Verify(args),
        } => {
            let report = verify_cli::run(&args, chrono::Utc::now());
            emit(&report.to_json().to_string());
            ExitCode::from(u8::try_from(report.exit_code()).unwrap_or(2))
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the operating system provides threads and timers")
}

/// Settings or a start-up failure that names every bad setting.
fn settings(env: &Environment) -> Result<Settings, ExitCode> {
    Settings::from_env(env).map_err(|e| {
        eprintln!("keyturn: {e}");
        ExitCode::from(1)
    })
}

async fn dev(
    data_dir: PathBuf,
    once: bool,
    root: PathBuf,
    tls_address: String,
    ingress_address: String,
    alerts_address: String,
) -> ExitCode {
    let level = match Environment::from_process().log_level_or(if once { "warn" } else { "info" }) {
        Ok(level) => level,
        Err(e) => {
            eprintln!("keyturn: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = telemetry::init_with_writer(&level, std::io::stderr) {
        eprintln!("keyturn: {e}");
        return ExitCode::from(2);
    }
    let executable = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("keyturn: cannot locate this executable: {e}");
            return ExitCode::from(2);
        }
    };
    let options = dev::DevOptions {
        data_dir,
        once,
        root,
        executable,
        tls_address,
        ingress_address,
        alerts_address,
    };
    match dev::run(options).await {
        Ok(Some(summary)) => {
            emit(&serde_json::to_string_pretty(&summary).unwrap_or_default());
            if summary.succeeded() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyturn: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(port: u16) -> ExitCode {
    let env = Environment::from_process();
    let settings = match settings(&env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Err(e) = telemetry::init(&settings.host.log_level) {
        eprintln!("keyturn: {e}");
        return ExitCode::from(1);
    }
    let tls_config = match startup::tls_config(&settings) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            eprintln!("keyturn: {e}");
            return ExitCode::from(1);
        }
    };
    let services = match startup::services(&settings, &env).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            eprintln!("keyturn: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match server::bind(port).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, port, "cannot listen");
            return ExitCode::from(1);
        }
    };
    let bound = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    let state = startup::app_state(&settings, services);
    let app = router(state.clone(), &settings.host.enabled_functions);
    let endpoint_enabled = settings
        .host
        .enabled_functions
        .contains(&secret_endpoint::NAME);
    let mut tls_server = None;
    if let (Some(tls), Some(config)) = (&settings.endpoint.tls, tls_config) {
        match startup::spawn_tls(
            tls.address,
            config,
            state.clone(),
            server::shutdown_signal(),
        )
        .await
        {
            Ok(server) => {
                tracing::info!(address = %server.local_addr(), "terminating TLS for the SecretEndpoint");
                tls_server = Some(server);
            }
            Err(e) => {
                match &e {
                    startup::TlsStartError::Bind { address, source } => {
                        tracing::error!(error = %source, %address, "cannot listen for TLS");
                    }
                    startup::TlsStartError::Start(source) => {
                        tracing::error!(error = %source, "cannot start TLS");
                    }
                }
                eprintln!("keyturn: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if endpoint_enabled {
        tokio::spawn(keyturn::mtls::endpoint::refresh_crls_every(
            state.services.endpoint.policies(),
            keyturn::mtls::endpoint::CRL_REFRESH_INTERVAL,
            server::shutdown_signal(),
        ));
    }
    let functions: Vec<&str> = settings
        .host
        .enabled_functions
        .iter()
        .map(|f| f.name())
        .collect();
    tracing::info!(port = bound, functions = ?functions, "listening");
    let exit_with_parent = settings.host.exit_with_parent;
    let shutdown = async move {
        if exit_with_parent {
            tokio::select! {
                () = server::shutdown_signal() => {},
                () = server::parent_gone() => {
                    // The local mode that started this handler died, as in a crash: stop
                    // at once, like it, rather than finish work it can no longer settle.
                    tracing::warn!("the process that started keyturn is gone; exiting");
                    std::process::exit(1);
                }
            }
        } else {
            server::shutdown_signal().await;
        }
    };
    let served = server::serve(listener, app, shutdown).await;
    // The TLS listener got the same signal; its in-flight requests finish too.
    let tls_stopped = match tls_server {
        Some(tls) => tls.stopped().await,
        None => Ok(()),
    };
    // Repeated refusals of the current window are counted, not yet written.
    if let Err(e) = state.services.audit.flush().await {
        tracing::error!(error = %e, "cannot write the last window's folded refusals");
    }
    if let Err(e) = tls_stopped {
        tracing::error!(error = %e, "TLS listener failed");
        return ExitCode::from(1);
    }
    match served {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::from(1)
        }
    }
}

fn config_check() -> ExitCode {
    let env = Environment::from_process();
    let listed: serde_json::Map<String, serde_json::Value> = SETTINGS
        .iter()
        .map(|spec| {
            let (value, source) = match (env.value(spec.name), spec.default) {
                (Some(v), _) if spec.secret || looks_like_secret_material(v) => {
                    ("[redacted]".to_string(), "set")
                }
                (Some(v), _) => (v.to_string(), "set"),
                (None, Some(d)) => (d.to_string(), "default"),
                (None, None) => (String::new(), "unset"),
            };
            (
                spec.name.to_string(),
                serde_json::json!({ "value": value, "source": source, "readBy": spec.read_by }),
            )
        })
        .collect();
    // The same parse and the same start-up build `serve` runs, files included; only
    // opening stores, binding ports and network calls are left out.
    let checked = Settings::from_env(&env).and_then(|settings| {
        startup::check(&settings, &env)
            .map(|()| settings)
            .map_err(|e| keyturn::config::ConfigError {
                errors: vec![keyturn::config::SettingError {
                    setting: "start-up".into(),
                    problem: e.to_string(),
                    example: "see README".into(),
                }],
            })
    });
    match checked {
        Ok(settings) => {
            let report =
                serde_json::json!({ "valid": true, "settings": listed, "effective": settings });
            emit(&serde_json::to_string_pretty(&report).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let errors: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
            let report =
                serde_json::json!({ "valid": false, "errors": errors, "settings": listed });
            emit(&serde_json::to_string_pretty(&report).unwrap_or_default());
            eprintln!("keyturn: {e}");
            ExitCode::from(1)
        }
    }
}

async fn audit_verify(data_dir: Option<PathBuf>, public_keys: Vec<PathBuf>) -> ExitCode {
    let env = Environment::from_process();
    let settings = match data_dir {
        Some(dir) => Ok(AuditCommandSettings::local(&dir)),
        None => AuditCommandSettings::from_env(&env),
    };
    let settings = match settings {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keyturn: {e}");
            return ExitCode::from(2);
        }
    };
    let verification = match startup::verification(&settings, &public_keys).await {
        Ok(verification) => verification,
        Err(e) => {
            eprintln!("keyturn: {e}");
            return ExitCode::from(2);
        }
    };
    match verification.run().await {
        Ok(report) => {
            emit(&serde_json::to_string_pretty(&report).unwrap_or_default());
            if report.is_intact() {
                eprintln!("keyturn: {report}");
                ExitCode::SUCCESS
            } else {
                eprintln!("keyturn: {report}");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("keyturn: cannot read the audit log: {e}");
            ExitCode::from(2)
        }
    }
}

/// `keyturn evidence export`.
async fn evidence_export(
    data_dir: Option<PathBuf>,
    from: &str,
    to: &str,
    out: &std::path::Path,
    public_keys: Vec<PathBuf>,
    exceptions: Option<PathBuf>,
) -> ExitCode {
    let fail = |problem: String| {
        eprintln!("keyturn: {problem}");
        ExitCode::from(2)
    };
    let period = match keyturn::evidence::Period::parse(from, to) {
        Ok(period) => period,
        Err(e) => return fail(e.to_string()),
    };
    let env = Environment::from_process();
    let settings = match data_dir {
        Some(dir) => Ok(AuditCommandSettings::local(&dir)),
        None => AuditCommandSettings::from_env(&env),
    };
    let settings = match settings {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let sources =
        match startup::evidence_sources(&settings, &public_keys, exceptions.as_deref(), &env).await
        {
            Ok(sources) => sources,
            Err(e) => return fail(e.to_string()),
        };
    let exported =
        keyturn::evidence::export(sources.sources(), &period, out, chrono::Utc::now()).await;
    match exported {
        Ok(summary) => {
            emit(&serde_json::to_string_pretty(&summary).unwrap_or_default());
            eprintln!(
                "keyturn: evidence package {} written: {} files, manifest signed with key {}",
                out.display(),
                summary.files.len(),
                summary.key
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!(
            "no evidence package written to {}: {e}",
            out.display()
        )),
    }
}

/// `keyturn evidence verify`.
fn evidence_verify(package: &std::path::Path, public_keys: &[PathBuf]) -> ExitCode {
    let mut keys = Vec::new();
    for path in public_keys {
        match startup::read_public_key_file(path) {
            Ok(named) => keys.extend(named.into_iter().map(|named| named.key)),
            Err(e) => {
                eprintln!("keyturn: {e}");
                return ExitCode::from(2);
            }
        }
    }
    match keyturn::evidence::verify::verify_package(package, keys) {
        Ok(report) => {
            emit(&serde_json::to_string_pretty(&report).unwrap_or_default());
            if report.key_source == keyturn::evidence::verify::KeySource::Package {
                eprintln!(
                    "keyturn: checked with the key inside the package ({}): compare it with the organisation's key, or pass --public-key FILE",
                    report.keys.join(", ")
                );
            }
            if report.intact {
                eprintln!(
                    "keyturn: evidence package intact: {} files match the signed manifest; {} audit entries verified",
                    report.files.len(),
                    report
                        .audit_extract
                        .as_ref()
                        .map_or(0, |audit| audit.entries_checked)
                );
                ExitCode::SUCCESS
            } else {
                eprintln!("keyturn: evidence package FAILED verification:");
                for problem in &report.problems {
                    eprintln!("  {problem}");
                }
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            ExitCode::from(2)
        }
    }
}

/// `keyturn inventory`.
async fn inventory_command(args: InventoryArgs) -> ExitCode {
    use keyturn::domain::inventory::{CredentialFilter, Expiring, SourceKind, parse_within};
    use keyturn::local::inventory_cli::{self, Format};
    let usage = |problem: String| {
        eprintln!("keyturn: {problem}");
        ExitCode::from(2)
    };
    let now = chrono::Utc::now();
    let expiring = match args.expiring.as_deref().map(parse_within).transpose() {
        Ok(within) => within.map(|within| Expiring { now, within }),
        Err(e) => return usage(format!("--expiring: {e}")),
    };
    let source_kind = match args.source.as_deref().map(SourceKind::parse).transpose() {
        Ok(kind) => kind,
        Err(e) => {
            return usage(format!(
                "--source: {e} (vault, application or service_principal)"
            ));
        }
    };
    let filter = CredentialFilter {
        expiring,
        unmanaged_only: args.unmanaged,
        owner: args.owner,
        source_kind,
        kind: None,
    };
    let location = startup::InventoryLocation {
        data_dir: args.data_dir,
        table: args.table,
        table_endpoint: args.table_endpoint,
    };
    let store = match startup::inventory_reader(&location, &Environment::from_process()) {
        Ok(store) => store,
        Err(e) => return usage(e.to_string()),
    };
    let format = match args.format {
        FormatArg::Table => Format::Table,
        FormatArg::Json => Format::Json,
        FormatArg::Csv => Format::Csv,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let printed = inventory_cli::print(store.as_ref(), &filter, format, now, &mut out).await;
    drop(out);
    match printed {
        Ok(summary) => {
            eprintln!(
                "keyturn: {} credentials ({} expired, {} without an end date, {} not managed by keyturn)",
                summary.printed, summary.expired, summary.no_end_date, summary.unmanaged
            );
            if summary.scope_errors > 0 {
                eprintln!(
                    "keyturn: {} scopes could not be read completely on the last sweeps:",
                    summary.scope_errors
                );
                for line in &summary.named_errors {
                    eprintln!("  {line}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            ExitCode::from(2)
        }
    }
}

/// `keyturn compliance`.
async fn compliance_command(args: ComplianceArgs) -> ExitCode {
    use keyturn::compliance::{AuditInput, Catalogue, Evaluation, Thresholds};
    use keyturn::local::compliance_cli::{self, Format};
    let usage = |problem: String| {
        eprintln!("keyturn: {problem}");
        ExitCode::from(2)
    };
    let catalogue = Catalogue::builtin();
    let framework = match args.framework.as_deref() {
        Some(given) => match Evaluation::framework_id(&catalogue, given) {
            Ok(id) => Some(id),
            Err(e) => return usage(format!("--framework: {e}")),
        },
        None => None,
    };
    let mut thresholds = Thresholds::default();
    let applied = (|| {
        for given in &args.max_lifetime {
            thresholds.set_max_lifetime(given)?;
        }
        if let Some(given) = &args.rotation_period {
            thresholds.set_rotation_period(given)?;
        }
        if let Some(given) = &args.credential_limit {
            thresholds.set_credential_limit(given)?;
        }
        if let Some(given) = &args.expiring {
            thresholds.set_expiring_within(given)?;
        }
        if let Some(given) = &args.period {
            thresholds.set_audit_period(given)?;
        }
        Ok::<_, keyturn::compliance::ThresholdError>(())
    })();
    if let Err(e) = applied {
        return usage(e.to_string());
    }
    let env = Environment::from_process();
    let location = startup::InventoryLocation {
        data_dir: args.data_dir.clone(),
        table: args.table,
        table_endpoint: args.table_endpoint,
    };
    let register =
        match startup::compliance_register(&location, args.exceptions.as_deref(), &env, &catalogue)
            .await
        {
            Ok(register) => register,
            Err(e) => return usage(e.to_string()),
        };
    let readers = match startup::compliance_readers(&location, &env).await {
        Ok(readers) => readers,
        Err(e) => return usage(e.to_string()),
    };
    let audit = match &readers.audit {
        Ok(verification) => {
            let verified = verification.run().await.map_err(|e| e.to_string());
            readers.audit_store().map(|store| AuditInput {
                store,
                verification: verified,
            })
        }
        Err(problem) => {
            eprintln!("keyturn: the audit rules are not evaluated: {problem}");
            None
        }
    };
    let evaluation = Evaluation {
        catalogue: &catalogue,
        thresholds: &thresholds,
        register: &register,
        framework: framework.as_deref(),
        now: chrono::Utc::now(),
        spill_after: keyturn::compliance::SPILL_AFTER,
    };
    let format = match args.format {
        ComplianceFormat::Table => Format::Table,
        ComplianceFormat::Json => Format::Json,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let printed = compliance_cli::print(
        &evaluation,
        readers.inventory.as_ref(),
        audit,
        !args.no_record,
        format,
        &mut out,
    )
    .await;
    drop(out);
    match printed {
        Ok((report, trend)) => {
            match (&trend.recorded_on, &trend.not_recorded) {
                (Some(sweep), _) => {
                    eprintln!("keyturn: scores recorded as sweep {sweep}'s trend point")
                }
                (None, Some(why)) => eprintln!("keyturn: scores not recorded: {why}"),
                (None, None) => {}
            }
            eprintln!(
                "keyturn: {} open and {} excepted findings over {} checks; keyturn gathers evidence and is not a certification",
                report.open, report.excepted, report.board.total.checks
            );
            for malformed in &report.malformed_exception_tags {
                eprintln!(
                    "keyturn: the exception tags on {} ({}, record {}) are refused: {}; its findings stay open",
                    malformed.name, malformed.source, malformed.record_id, malformed.problem
                );
            }
            for lapsed in &report.lapsed_exceptions {
                eprintln!(
                    "keyturn: exception {} ({}, {}) lapsed on {}: its findings count again",
                    lapsed.entry,
                    lapsed.rule,
                    lapsed.owner,
                    lapsed.expires.to_rfc3339()
                );
            }
            if report.open > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => usage(e.to_string()),
    }
}

/// `keyturn audit list` and `keyturn audit export`.
async fn audit_read(args: AuditReadArgs, default_format: FormatArg) -> ExitCode {
    use keyturn::audit::export::{self, Filter, Format, Start};
    let usage = |problem: String| {
        eprintln!("keyturn: {problem}");
        ExitCode::from(2)
    };
    let time = |flag: &str, value: Option<&str>| {
        value
            .map(|text| {
                chrono::DateTime::parse_from_rfc3339(text)
                    .map(|at| at.with_timezone(&chrono::Utc))
                    .map_err(|_| {
                        format!("--{flag} `{text}` is not an RFC 3339 time (2025-03-01T12:00:00Z)")
                    })
            })
            .transpose()
    };
    let filter = (|| {
        Ok::<_, String>(Filter {
            since: time("since", args.since.as_deref())?,
            until: time("until", args.until.as_deref())?,
            actions: args.action.clone(),
            object: args.object.clone(),
            identity: args.identity.clone(),
            outcome: args
                .outcome
                .as_deref()
                .map(|o| o.parse().map_err(|e| format!("--outcome `{o}`: {e}")))
                .transpose()?,
        })
    })();
    let filter = match filter {
        Ok(filter) => filter,
        Err(problem) => return usage(problem),
    };
    let start = Start {
        chain: match args.from_chain.map(keyturn::ports::audit::ChainId::parse) {
            None => None,
            Some(Ok(chain)) => Some(chain),
            Some(Err(e)) => return usage(format!("--from-chain: {e}")),
        },
        position: args.from_sequence,
    };
    let location = startup::AuditLocation {
        data_dir: args.data_dir,
        table: args.table,
        table_endpoint: args.table_endpoint,
    };
    let store = match startup::audit_reader(&location, &Environment::from_process()) {
        Ok(store) => store,
        Err(e) => return usage(e.to_string()),
    };
    let format = match args.format.unwrap_or(default_format) {
        FormatArg::Table => Format::Table,
        FormatArg::Json => Format::Json,
        FormatArg::Csv => Format::Csv,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let exported = export::export(
        store.as_ref(),
        &filter,
        format,
        &start,
        args.limit,
        &mut out,
    )
    .await;
    drop(out);
    match exported {
        Ok(summary) => {
            eprintln!(
                "keyturn: {} entries printed ({} occurrences) of {} read; {} unreadable",
                summary.printed, summary.occurrences, summary.read, summary.unreadable
            );
            if let Some(next) = &summary.next_from {
                let chain = next
                    .chain
                    .as_ref()
                    .map(|chain| format!("--from-chain {chain} "))
                    .unwrap_or_default();
                eprintln!(
                    "keyturn: more entries follow: {chain}--from-sequence {}",
                    next.position
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            ExitCode::from(2)
        }
    }
}

fn package_command(
    root: &std::path::Path,
    binary: Option<PathBuf>,
    out: &std::path::Path,
) -> ExitCode {
    let binary = match binary.map(Ok).unwrap_or_else(std::env::current_exe) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("keyturn: cannot locate this executable: {e}");
            return ExitCode::from(2);
        }
    };
    if binary.components().any(|c| c.as_os_str() == "debug") {
        eprintln!(
            "keyturn: warning: packaging a debug build ({}); use a --release build for deployment",
            binary.display()
        );
    }
    match package::build(root, &binary, out) {
        Ok(manifest) => {
            emit(&serde_json::to_string_pretty(&manifest).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            ExitCode::from(1)
        }
    }
}

async fn plan_command(
    data_dir: Option<PathBuf>,
    vaults: &[String],
    format: PlanFormat,
) -> ExitCode {
    let env = Environment::from_process();
    let azure = data_dir.is_none()
        && (!vaults.is_empty()
            || env
                .value("KEYTURN_BACKEND")
                .is_some_and(|b| b.trim().eq_ignore_ascii_case("azure")));
    let planned = if azure {
        match keyturn::config::PlanSettings::from_env(&env, vaults) {
            Ok(settings) => plan_cli::plan_azure(&settings, chrono::Utc::now()).await,
            Err(e) => {
                eprintln!("keyturn: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        let data_dir = data_dir
            .or_else(|| env.value("KEYTURN_DATA_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(keyturn::config::DEFAULT_DATA_DIR));
        let settings = env
            .local_vault_key()
            .and_then(|key| Ok((key, env.rotation_defaults()?)));
        let (key, defaults) = match settings {
            Ok(settings) => settings,
            Err(e) => {
                eprintln!("keyturn: {e}");
                return ExitCode::from(2);
            }
        };
        plan_cli::plan(&data_dir, key.as_ref(), defaults, chrono::Utc::now()).await
    };
    match planned {
        Ok(plan) => {
            match format {
                PlanFormat::Json => emit(&serde_json::to_string_pretty(&plan).unwrap_or_default()),
                PlanFormat::Table => emit(plan_cli::table(&plan).trim_end()),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            ExitCode::from(match e {
                vault_cli::VaultCliError::Usage(_) | vault_cli::VaultCliError::NoDataDir(_) => 2,
                _ => 1,
            })
        }
    }
}

async fn directory_command(command: DirectoryCommand) -> ExitCode {
    let key = match Environment::from_process().local_vault_key() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("keyturn: {e}");
            return ExitCode::from(2);
        }
    };
    let DirectoryCommand::Policy {
        app,
        max_password_days,
        name,
        clear,
        data_dir,
    } = command;
    let change = match (max_password_days, clear) {
        (Some(days), _) => directory_cli::PolicyChange::Limit { days, name },
        (None, true) => directory_cli::PolicyChange::Clear,
        (None, false) => directory_cli::PolicyChange::Show,
    };
    match directory_cli::policy(&data_dir, key.as_ref(), app.as_deref(), change).await {
        Ok(policies) => {
            emit(&serde_json::to_string_pretty(&policies).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            ExitCode::from(match e {
                vault_cli::VaultCliError::Usage(_) | vault_cli::VaultCliError::NoDataDir(_) => 2,
                _ => 1,
            })
        }
    }
}

async fn vault_command(command: VaultCommand) -> ExitCode {
    let key = match Environment::from_process().local_vault_key() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("keyturn: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        VaultCommand::List { data_dir } => {
            match vault_cli::open_vault(&data_dir, key.as_ref()).await {
                Ok(vault) => vault_cli::list(&vault).await,
                Err(e) => Err(e),
            }
        }
        VaultCommand::Set {
            name,
            tags,
            expires,
            content_type,
            data_dir,
        } => {
            vault_set(
                &data_dir,
                key.as_ref(),
                &name,
                &tags,
                expires.as_deref(),
                content_type,
            )
            .await
        }
    };
    match result {
        Ok(report) => {
            emit(&serde_json::to_string_pretty(&report).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keyturn: {e}");
            ExitCode::from(match e {
                vault_cli::VaultCliError::Usage(_) => 2,
                _ => 1,
            })
        }
    }
}

async fn vault_set(
    data_dir: &std::path::Path,
    key: Option<&keyturn::domain::secret::SecretValue>,
    name: &str,
    tags: &[String],
    expires: Option<&str>,
    content_type: Option<String>,
) -> Result<serde_json::Value, vault_cli::VaultCliError> {
    use std::io::Read;
    let now = chrono::Utc::now();
    let tags = vault_cli::parse_tags(tags)?;
    let expires = expires
        .map(|e| vault_cli::parse_expires(e, now))
        .transpose()?;
    let mut value = String::new();
    std::io::stdin()
        .take(MAX_STDIN_SECRET_BYTES)
        .read_to_string(&mut value)
        .map_err(|e| {
            vault_cli::VaultCliError::Usage(format!("cannot read the value from stdin: {e}"))
        })?;
    // A trailing newline from `echo` or a heredoc is not part of the secret.
    let value =
        keyturn::domain::secret::SecretValue::new(value.trim_end_matches(['\r', '\n']).to_string());
    let vault = vault_cli::open_vault(data_dir, key).await?;
    vault_cli::set(&vault, name, value, tags, expires, content_type, now).await
}

/// Key Vault's secret value limit, and one byte past it so the vault reports the size
/// instead of the value being cut silently.
const MAX_STDIN_SECRET_BYTES: u64 = keyturn::domain::limits::MAX_SECRET_VALUE_BYTES as u64 + 1;

/// Writes one report to stdout. A closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}
