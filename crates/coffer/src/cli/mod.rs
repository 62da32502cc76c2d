//! The command line. Flags follow `vault`'s habits: single-dash long flags (`-format=json`),
//! `COFFER_ADDR`/`COFFER_TOKEN` with `VAULT_*` fallbacks, `k=v`, `k=@file` and `-` for stdin.

mod args;
mod audit;
mod commands;
mod kv;
mod lease;
mod output;

use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

pub(crate) use output::Format;

#[derive(Parser, Debug)]
#[command(
    name = "coffer",
    version,
    about = "Coffer: a zero-trust secrets manager for containerized workloads",
    long_about = "Coffer keeps secrets in sealed, encrypted storage and hands each workload only what its \
policy allows. One binary is the server (`coffer server`) and this client.\n\n\
The client reads COFFER_ADDR (or VAULT_ADDR), COFFER_TOKEN (or VAULT_TOKEN, or the token saved by \
`coffer login`) and COFFER_CACERT (or VAULT_CACERT). Flags may be written with one dash, as with vault: \
-format=json."
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct Global {
    /// Address of the Coffer server [env: COFFER_ADDR, VAULT_ADDR] [default: https://127.0.0.1:8200]
    #[arg(long, global = true, value_name = "URL")]
    pub address: Option<String>,
    /// PEM file of the CA(s) that signed the server's certificate [env: COFFER_CACERT, VAULT_CACERT]
    #[arg(long = "ca-cert", global = true, value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// PEM client certificate for mutual TLS [env: COFFER_CLIENT_CERT, VAULT_CLIENT_CERT]
    #[arg(long = "client-cert", global = true, value_name = "FILE")]
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM private key for -client-cert [env: COFFER_CLIENT_KEY, VAULT_CLIENT_KEY]
    #[arg(long = "client-key", global = true, value_name = "FILE")]
    pub client_key: Option<std::path::PathBuf>,
    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Print only this field of the response, raw
    #[arg(long, global = true, value_name = "NAME")]
    pub field: Option<String>,
    /// Have the server wrap the answer in a single-use token valid this long (e.g. 60s); unwrap
    /// it with `coffer unwrap` [env: COFFER_WRAP_TTL, VAULT_WRAP_TTL]
    #[arg(long = "wrap-ttl", global = true, value_name = "DURATION")]
    pub wrap_ttl: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run a Coffer server
    Server(ServerArgs),
    /// Operator tasks: init, unseal, seal, rotate, key-status
    #[command(subcommand)]
    Operator(OperatorCmd),
    /// Print the seal status of the server (exit 0 unsealed, 2 sealed, 1 error)
    Status,
    /// Log in (with a token, or an auth method: -method=approle|jwt|kubernetes|cert) and save the token
    Login(LoginArgs),
    /// Unwrap a wrapped response (the current token, or TOKEN); works only once per token
    Unwrap {
        /// The wrapping token; `-` reads it from stdin
        token: Option<String>,
    },
    /// Create, look up, renew and revoke tokens
    #[command(subcommand)]
    Token(TokenCmd),
    /// Write, read, list, delete and format ACL policies
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Enable, disable, list and tune secrets engines
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Enable, disable and list auth methods
    #[command(subcommand)]
    Auth(AuthCmd),
    /// Audit devices, and `coffer audit verify FILE` to check a log's hash chain
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Key/value secrets, versioned (kv v2) or not (v1): put, get, patch, delete, metadata...
    #[command(subcommand)]
    Kv(kv::KvCmd),
    /// Look up, renew and revoke the leases of dynamic secrets (and look up and revoke tokens')
    #[command(subcommand)]
    Lease(lease::LeaseCmd),
    /// Read data at PATH (e.g. `coffer read secret/app`)
    Read(PathArgs),
    /// Write data to PATH: `coffer write secret/app password=s3cr3t cert=@cert.pem`, or `-` for a JSON object on stdin
    Write(WriteArgs),
    /// Delete data at PATH
    Delete(PathArgs),
    /// List the keys below PATH
    List(PathArgs),
    /// Print a shell completion script: `coffer completion bash > /etc/bash_completion.d/coffer`
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
pub(crate) struct ServerArgs {
    /// Server configuration file (HCL or JSON)
    #[arg(long, value_name = "FILE", required_unless_present = "dev")]
    pub config: Option<std::path::PathBuf>,
    /// Development mode: in-memory, unsealed, root token printed. Never for production.
    #[arg(long, conflicts_with = "config")]
    pub dev: bool,
    /// Use this string as the dev root token [env: COFFER_DEV_ROOT_TOKEN_ID, VAULT_DEV_ROOT_TOKEN_ID]
    #[arg(long = "dev-root-token-id", value_name = "TOKEN", requires = "dev")]
    pub dev_root_token_id: Option<String>,
    /// Address the dev server listens on
    #[arg(
        long = "dev-listen-address",
        value_name = "IP:PORT",
        default_value = "127.0.0.1:8200",
        requires = "dev"
    )]
    pub dev_listen_address: String,
    /// Log level: trace, debug, info, warn, error (overrides the config file)
    #[arg(long = "log-level", value_name = "LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum OperatorCmd {
    /// Initialize a new server: creates the unseal key shares and the root token
    Init {
        /// Number of key shares to split the unseal key into
        #[arg(long = "key-shares", default_value_t = 5)]
        key_shares: u64,
        /// Number of shares needed to unseal
        #[arg(long = "key-threshold", default_value_t = 3)]
        key_threshold: u64,
    },
    /// Provide one unseal key share (prompted for when not given; `-` reads stdin)
    Unseal {
        key: Option<String>,
        /// Discard the shares given so far
        #[arg(long)]
        reset: bool,
    },
    /// Seal the server: it forgets its keys until unsealed again (needs sudo)
    Seal,
    /// Add a new encryption key term; new writes use it, old data stays readable
    Rotate,
    /// Show the active encryption key term
    KeyStatus,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
coffer login                                    # prompts for a token\n  \
coffer login -method=approle role_id=$ROLE_ID secret_id=-   # secret ID from stdin\n  \
coffer login -method=jwt role=ci jwt=@$CI_JOB_JWT_FILE\n  \
coffer login -method=kubernetes role=web jwt=@/var/run/secrets/kubernetes.io/serviceaccount/token\n  \
coffer login -method=cert -client-cert=me.pem -client-key=me-key.pem name=web\n\n\
Each method logs in at auth/<path>/login (the path defaults to the method's name).")]
pub(crate) struct LoginArgs {
    /// With -method=token: the token (`-` reads stdin; prompted for when missing). With other
    /// methods: the login's KEY=VALUE fields (`KEY=@file` reads a file, `KEY=-` reads stdin)
    pub args: Vec<String>,
    /// Auth method: token, approle, jwt, oidc (JWT login), kubernetes, cert
    #[arg(long, default_value = "token", value_name = "TYPE")]
    pub method: String,
    /// Where the method is mounted below auth/ (defaults to the method's name)
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Don't save the token, only check it
    #[arg(long = "no-store")]
    pub no_store: bool,
    /// Print only the token and don't save it
    #[arg(long = "token-only")]
    pub token_only: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCmd {
    /// Create a child token of the current token (or an orphan with -orphan)
    Create(TokenCreateArgs),
    /// Show a token's properties (the current token when none is given)
    Lookup {
        token: Option<String>,
        /// Treat the argument as a token accessor
        #[arg(long)]
        accessor: bool,
    },
    /// Extend a token's TTL (the current token when none is given)
    Renew {
        token: Option<String>,
        /// Requested TTL extension, e.g. 1h
        #[arg(long)]
        increment: Option<String>,
        #[arg(long)]
        accessor: bool,
    },
    /// Revoke a token and its children
    Revoke {
        token: Option<String>,
        /// Revoke the current token
        #[arg(long = "self")]
        self_: bool,
        /// Treat the argument as a token accessor
        #[arg(long)]
        accessor: bool,
        /// `orphan`: revoke only this token; its children become orphans
        #[arg(long, value_parser = ["orphan", "path"])]
        mode: Option<String>,
    },
}

#[derive(Args, Debug)]
pub(crate) struct TokenCreateArgs {
    /// A policy to attach (repeatable)
    #[arg(long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,
    /// Initial TTL, e.g. 30m
    #[arg(long)]
    pub ttl: Option<String>,
    /// Hard limit on the token's lifetime, renewals included
    #[arg(long = "explicit-max-ttl")]
    pub explicit_max_ttl: Option<String>,
    /// Renew period for a periodic token (sudo)
    #[arg(long)]
    pub period: Option<String>,
    /// Number of uses after which the token is revoked (0 = unlimited)
    #[arg(long = "use-limit", alias = "num-uses", default_value_t = 0)]
    pub use_limit: u64,
    /// Create a token with no parent (through auth/token/create-orphan)
    #[arg(long)]
    pub orphan: bool,
    /// Allow renewing the token
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub renewable: bool,
    /// Name shown in the audit log
    #[arg(long = "display-name")]
    pub display_name: Option<String>,
    /// Metadata key=value (repeatable)
    #[arg(long = "metadata", value_name = "K=V")]
    pub metadata: Vec<String>,
    /// Don't attach the default policy
    #[arg(long = "no-default-policy")]
    pub no_default_policy: bool,
    /// Custom token ID (root only)
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCmd {
    /// Upload a policy from a file (`-` for stdin)
    Write { name: String, file: String },
    /// Print a policy
    Read { name: String },
    /// List policy names
    List,
    /// Delete a policy
    Delete { name: String },
    /// Check and reformat a policy file in place
    Fmt { file: std::path::PathBuf },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SecretsCmd {
    /// Enable a secrets engine: `coffer secrets enable -path=secret kv`
    Enable(EnableArgs),
    /// Disable a secrets engine and destroy all its data
    Disable { path: String },
    /// List enabled secrets engines
    List {
        #[arg(long)]
        detailed: bool,
    },
    /// Change a secrets engine's TTLs, description or options
    Tune(TuneArgs),
}

#[derive(Subcommand, Debug)]
pub(crate) enum AuthCmd {
    /// Enable an auth method
    Enable(EnableArgs),
    /// Disable an auth method; tokens it issued stop working
    Disable { path: String },
    /// List enabled auth methods
    List {
        #[arg(long)]
        detailed: bool,
    },
    /// Change an auth method's TTLs or description
    Tune(TuneArgs),
}

#[derive(Args, Debug)]
pub(crate) struct EnableArgs {
    /// The engine or method type (kv, approle, ...)
    pub kind: String,
    /// Where to mount it (default: the type name)
    #[arg(long)]
    pub path: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long = "default-lease-ttl")]
    pub default_lease_ttl: Option<String>,
    #[arg(long = "max-lease-ttl")]
    pub max_lease_ttl: Option<String>,
    /// Engine option key=value (repeatable)
    #[arg(long = "options", value_name = "K=V")]
    pub options: Vec<String>,
    /// Shorthand for -options=version=N (kv)
    #[arg(long)]
    pub version: Option<u32>,
}

#[derive(Args, Debug)]
pub(crate) struct TuneArgs {
    pub path: String,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long = "default-lease-ttl")]
    pub default_lease_ttl: Option<String>,
    #[arg(long = "max-lease-ttl")]
    pub max_lease_ttl: Option<String>,
    #[arg(long = "options", value_name = "K=V")]
    pub options: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct PathArgs {
    pub path: String,
    /// key=value query parameters (read)
    pub params: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct WriteArgs {
    pub path: String,
    /// key=value, key=@file, key=- (stdin), or a lone `-` for a JSON object on stdin
    pub data: Vec<String>,
    /// Send the request even with no data
    #[arg(short, long)]
    pub force: bool,
}

impl ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        &[Format::Table, Format::Json]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            Format::Table => "table",
            Format::Json => "json",
        }))
    }
}

pub(crate) fn main() -> ExitCode {
    let argv = args::normalize(std::env::args_os());
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(1) } else { ExitCode::SUCCESS };
        }
    };
    if let Command::Completion { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "coffer", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(commands::run(cli))
}
