//! The `sys/` paths declared as data (pattern, operations, fields, synopsis), in the path
//! framework's pattern language: the one list that `?help=1`, the OpenAPI document and the
//! system router itself read.
//!
//! Guarantees: the router serves a `sys/` request only when a declared pattern matches its path
//! and declares its operation (else 404 naming the path, or 405), so no `sys/` path is served
//! that is not declared here; a test sends every declared operation of every declared path to a
//! live core and finds each one routed, so no declaration names a path the router does not
//! serve. Which paths need `sudo` or no token is not declared twice: the document asks
//! [`crate::authz`], which decides it. The fields are documentation: the handlers check them.

use serde_json::{Map, Value};

use crate::authz::{is_public_sys, is_sudo_sys, is_unauthenticated_sys};
use crate::backend::framework::help::{Help, path_help, root_help};
use crate::backend::framework::pattern::matches;
use crate::backend::framework::{Field, Spec};
use crate::logical::{Error, Operation, Result};

/// One declared `sys/` path, relative to `sys/`.
pub(crate) struct SysPath {
    pub(crate) pattern: &'static str,
    pub(crate) synopsis: &'static str,
    /// `Update` serves `create` too, as every write endpoint does.
    pub(crate) ops: &'static [Operation],
    pub(crate) fields: &'static [Field],
    /// Request fields the audit log shows in clear rather than as HMACs.
    pub(crate) audit_clear: Option<AuditClear>,
}

/// Request fields that an audit entry shows in clear: the narrowest exemption from hashing,
/// declared with the one path it applies to. It holds only for a body the handler accepts
/// (`valid`), so a body that will be refused (a value sent in a field of its own, say) is hashed
/// like any other.
#[derive(Clone, Copy)]
pub(crate) struct AuditClear {
    pub(crate) keys: &'static [&'static str],
    pub(crate) valid: fn(&Map<String, Value>) -> bool,
}

use Operation::{Delete, List, Read, Update};

const fn p(
    pattern: &'static str,
    synopsis: &'static str,
    ops: &'static [Operation],
    fields: &'static [Field],
) -> SysPath {
    SysPath { pattern, synopsis, ops, fields, audit_clear: None }
}

impl SysPath {
    const fn audit_in_clear(mut self, clear: AuditClear) -> Self {
        self.audit_clear = Some(clear);
        self
    }
}

const LEASE_ID: Field = Field::str("lease_id", "The lease's id (or give it in the path).");
const URL_LEASE_ID: Field = Field::str("url_lease_id", "The lease's id.");
const PREFIX: Field = Field::str("prefix", "A lease id prefix: a mount and path below it.");
const CAP_PATHS: Field = Field::comma_list("paths", "The paths to report on.");
const CAP_PATH: Field = Field::str("path", "One path to report on (Vault's older form).");
const MOUNT_PATH: Field = Field::str("path", "The mount's path.");
const TUNE: &[Field] = &[
    MOUNT_PATH,
    Field::duration("default_lease_ttl", "Default lease TTL; 0 or `system`: the system's."),
    Field::duration("max_lease_ttl", "Maximum lease TTL; 0 or `system`: the system's."),
    Field::str("description", "What the mount is for."),
    Field::map("options", "Engine options (`version` for kv: 1 to 2 upgrades the data)."),
    Field::str("listing_visibility", "`hidden` or `unauth` (recorded; Coffer has no UI)."),
    Field::comma_list("audit_non_hmac_request_keys", "Request data keys audited in clear."),
    Field::comma_list("audit_non_hmac_response_keys", "Response data keys audited in clear."),
    Field::comma_list("passthrough_request_headers", "Recorded; no engine reads headers."),
    Field::comma_list("allowed_response_headers", "Recorded; no engine sets headers."),
];
const ENABLE: &[Field] = &[
    MOUNT_PATH,
    Field::str("type", "The engine or method type: `kv`, `approle`, ...").required(),
    Field::str("description", "What the mount is for."),
    Field::map("config", "default_lease_ttl, max_lease_ttl and the other tunables."),
    Field::map("options", "Engine options (`version` for kv)."),
    Field::bool("local", "Not replicated (recorded; Coffer has no replication)."),
    Field::bool("seal_wrap", "Recorded; Coffer encrypts every value already."),
];
const SHARE_KEY: Field = Field::str("key", "One unseal key share, hex or base64.");
const GENERATE_ROOT_ATTEMPT: &[Field] = &[
    Field::str(
        "otp",
        "A one-time pad as long as a token (otp_length); absent: one is made \
        and shown once.",
    ),
    Field::str("pgp_key", "Not supported."),
];
const ACL_NAME: Field = Field::str("name", "The policy's name.");
const PASSWORD_NAME: Field = Field::str("name", "The password policy's name.");
const AUDIT_PATH: Field = Field::str("path", "The device's path.");
const FAULT: &[Field] = &[
    Field::str(
        "type",
        "latency, error, seal, storage_unavailable, audit_blocked, revoke_prefix, rotate or host.",
    )
    .required(),
    Field::duration("duration", "How long it lasts (lasting kinds; at most max_duration)."),
    Field::duration("latency", "latency: the delay added to each request in scope."),
    Field::duration("jitter", "latency: up to this much more, at random."),
    Field::int("status", "error: 500, 503 or 429 (default 503)."),
    Field::str("rate", "error: the share of requests in scope that fail, 0 < rate <= 1."),
    Field::str("prefix", "revoke_prefix: the lease id prefix."),
    Field::str("path", "rotate: <mount>/static-roles/<name>, or a KV secret's path."),
    Field::str_list("keys", "rotate on KV: the keys given fresh random values."),
    Field::str("path_prefix", "Scope: request paths (after /v1/) starting with this."),
    Field::str("role", "Scope: tokens an auth method issued at login to this role."),
    Field::str("display_name", "Scope: tokens with this display name."),
    Field::str("entity", "Scope: tokens of this identity entity id."),
    Field::str("host_kind", "host: partition, netem, kill, pause or agent_cache."),
    Field::str("host_id", "host: the host fault's hostfault-... id."),
    Field::str("target", "host: what the host fault acts on, as text (no secrets)."),
];
const DELIVERY: &[Field] = &[
    Field::str("event", "`delivered`, `redelivered` or `removed`.").required(),
    Field::str("reason", "Why: `initial`, `rotation`, `lease-reissue`, `new-token`, `exit`...")
        .required(),
    Field::str_list("paths", "The secret paths read (at most 256)."),
    Field::str_list("destinations", "Where they went: files, `env:NAME` (at most 256)."),
    Field::map("agent", "The agent's own claims: `instance`, `hostname`, `pod`, `container`."),
];

const DETECT_RULE: &[Field] = &[
    Field::str("name", "The rule's name."),
    Field::str(
        "type",
        "honeytoken, login_failures, token_cidr, many_paths, image_digest or rate_baseline.",
    )
    .required(),
    Field::bool("enabled", "Whether the rule runs (default true)."),
    Field::str("description", "What the rule is for."),
    Field::str("priority", "Falco's priority for its alerts (default per type)."),
    Field::comma_list("actions", "audit, webhook, revoke_token, revoke_role (default audit)."),
    Field::str("webhook_url", "Where webhook posts (default: the detect block's)."),
    Field::duration("cooldown", "No second alert about the same subject within it."),
    Field::comma_list("tags", "Tags added to its alerts."),
    Field::comma_list("paths", "honeytoken: the paths, `*` globs."),
    Field::comma_list("operations", "honeytoken, many_paths: the operations counted."),
    Field::int("threshold", "login_failures, many_paths: how many within the window."),
    Field::duration("window", "login_failures, many_paths, rate_baseline: the window."),
    Field::comma_list("per", "login_failures: source, role or both."),
    Field::int("ipv4_prefix", "token_cidr: the issuing network's IPv4 prefix length."),
    Field::int("ipv6_prefix", "token_cidr: the issuing network's IPv6 prefix length."),
    Field::int("max_tokens", "token_cidr: tokens remembered at most."),
    Field::duration("learn_for", "image_digest: how long a role's digests are learned."),
    Field::int("min_observations", "image_digest: sightings needed before judging."),
    Field::duration("bucket", "rate_baseline: the interval requests are counted in."),
    Field::duration("warmup", "rate_baseline: how long an identity is watched first."),
    Field::str("factor", "rate_baseline: how many times the baseline alerts."),
    Field::int("min_requests", "rate_baseline: requests in a bucket needed to alert."),
];

/// Every `sys/` path, in the order help matches them (the first match documents a path).
pub(crate) const PATHS: &[SysPath] = &[
    p(
        "init",
        "Whether the server is initialized (read); initialize it (write).",
        &[Read, Update],
        &[
            Field::int("secret_shares", "How many unseal key shares to make."),
            Field::int("secret_threshold", "How many shares unseal."),
            Field::int("recovery_shares", "Auto-unseal: how many recovery key shares to make."),
            Field::int(
                "recovery_threshold",
                "Auto-unseal: how many recovery shares make a quorum.",
            ),
            Field::comma_list("pgp_keys", "Not supported: shares are returned in the clear."),
            Field::str("root_token_pgp_key", "Not supported."),
        ],
    ),
    p("seal-status", "The seal's state and the unseal progress.", &[Read], &[]),
    p("host-info", "The host's CPUs, CPU times, disks, identity and memory.", &[Read], &[]),
    p("config/state/sanitized", "The running configuration, without secrets.", &[Read], &[]),
    p("internal/counters/tokens", "How many tokens exist.", &[Read], &[]),
    p("internal/counters/entities", "How many identity entities exist.", &[Read], &[]),
    p("internal/counters/requests", "Removed in Vault: always 404.", &[Read], &[]),
    p(
        "metrics",
        "Telemetry: Vault's JSON format, or Prometheus text with format=prometheus.",
        &[Read],
        &[Field::str("format", "`prometheus` for Prometheus text; empty for JSON.")],
    ),
    p(
        "unseal",
        "Submit one unseal key share, or reset the progress.",
        &[Update],
        &[
            Field::str("key", "One unseal key share, hex or base64."),
            Field::bool("reset", "Forget the shares submitted so far."),
            Field::bool(
                "migrate",
                "Seal migration: the Shamir shares move the storage to the configured seal.",
            ),
        ],
    ),
    p(
        "health",
        "Health, with the status code telling it (load balancers).",
        &[Read],
        &[
            Field::bool("standbyok", "Answer with activecode (200) on an HA standby."),
            Field::bool("perfstandbyok", "Answer 200 on a performance standby (Coffer has none)."),
            Field::int("activecode", "Status code when active and unsealed (200)."),
            Field::int("standbycode", "Status code on a standby (429)."),
            Field::int("drsecondarycode", "Status code on a DR secondary (472)."),
            Field::int("performancestandbycode", "Status code on a performance standby (473)."),
            Field::int("sealedcode", "Status code when sealed (503)."),
            Field::int("uninitcode", "Status code when not initialized (501)."),
            Field::int("removedcode", "Status code when removed from a cluster (530)."),
            Field::int("haunhealthycode", "Status code when HA is unhealthy (474)."),
        ],
    ),
    p("leader", "The HA leader: this node without HA mode.", &[Read], &[]),
    p("ha-status", "The HA nodes that reported recently, and which one is active.", &[Read], &[]),
    p("step-down", "The active node gives up leadership (HA).", &[Update], &[]),
    p(
        "generate-root",
        "Root token generation: see generate-root/attempt and generate-root/update. As in \
        Vault, no operation is served here.",
        &[],
        &[],
    ),
    p(
        "generate-root/attempt",
        "The root token generation under way (read), start one (write), cancel it (delete). \
        No token needed: the credential is a quorum of unseal key shares.",
        &[Read, Update, Delete],
        GENERATE_ROOT_ATTEMPT,
    ),
    p(
        "generate-root/update",
        "Submit one unseal key share to the root token generation; the last one gets the \
        new root token, encoded with the one-time pad.",
        &[Update],
        &[SHARE_KEY, Field::str("nonce", "The generation's nonce.")],
    ),
    p(
        "decode-token",
        "Decode a root token encoded by generate-root, with its one-time pad. No token needed.",
        &[Update],
        &[
            Field::str("encoded_token", "The encoded token generate-root answered."),
            Field::str("otp", "The one-time pad it was encoded with."),
        ],
    ),
    p(
        "rekey/init",
        "The rekey under way (read), start one (write), cancel it (delete). No token \
        needed: the credential is a quorum of unseal key shares.",
        &[Read, Update, Delete],
        &[
            Field::int("secret_shares", "How many new shares to make."),
            Field::int("secret_threshold", "How many new shares unseal."),
            Field::bool(
                "require_verification",
                "The new shares take effect only once a \
                threshold of them was submitted to rekey/verify.",
            ),
            Field::comma_list("pgp_keys", "Not supported: shares are returned in the clear."),
            Field::bool("backup", "Not supported (Vault allows it only with pgp_keys)."),
        ],
    ),
    p(
        "rekey/update",
        "Submit one current unseal key share to the rekey; the last one gets the new shares.",
        &[Update],
        &[SHARE_KEY, Field::str("nonce", "The rekey's nonce.")],
    ),
    p(
        "rekey/verify",
        "The verification of the new shares (read), submit one new share (write), start \
        the verification over (delete).",
        &[Read, Update, Delete],
        &[SHARE_KEY, Field::str("nonce", "The verification's nonce.")],
    ),
    p(
        "rekey-recovery-key/init",
        "As rekey/init, for the recovery key of an auto-unseal server; its shares are the \
        credential. On a Shamir server: 400.",
        &[Read, Update, Delete],
        &[
            Field::int("secret_shares", "How many new recovery shares to make."),
            Field::int("secret_threshold", "How many new recovery shares make a quorum."),
            Field::bool(
                "require_verification",
                "The new shares take effect only once a \
                threshold of them was submitted to rekey-recovery-key/verify.",
            ),
            Field::comma_list("pgp_keys", "Not supported: shares are returned in the clear."),
            Field::bool("backup", "Not supported (Vault allows it only with pgp_keys)."),
        ],
    ),
    p(
        "rekey-recovery-key/update",
        "Submit one current recovery key share; the last one gets the new shares.",
        &[Update],
        &[SHARE_KEY, Field::str("nonce", "The rekey's nonce.")],
    ),
    p(
        "rekey-recovery-key/verify",
        "The verification of the new recovery shares (read), submit one new share (write), \
        start the verification over (delete).",
        &[Read, Update, Delete],
        &[SHARE_KEY, Field::str("nonce", "The verification's nonce.")],
    ),
    p(
        "rekey/backup",
        "Backed-up PGP-encrypted shares: Coffer makes none (read: 400; delete: no-op).",
        &[Read, Delete],
        &[],
    ),
    p("seal", "Seal the server: every key leaves memory.", &[Update], &[]),
    p("rotate", "Add a new encryption key term; new writes use it.", &[Update], &[]),
    p("key-status", "The current key term and when it was installed.", &[Read], &[]),
    p(
        "capabilities-self",
        "The caller's capabilities on paths.",
        &[Update],
        &[CAP_PATHS, CAP_PATH],
    ),
    p(
        "capabilities",
        "A token's capabilities on paths.",
        &[Update],
        &[Field::str("token", "The token to ask about."), CAP_PATHS, CAP_PATH],
    ),
    p(
        "capabilities-accessor",
        "The capabilities on paths of the token behind an accessor.",
        &[Update],
        &[Field::str("accessor", "The token's accessor."), CAP_PATHS, CAP_PATH],
    ),
    p("wrapping/wrap", "Wrap the request body in a single-use wrapping token.", &[Update], &[]),
    p(
        "wrapping/unwrap",
        "Unwrap a wrapping token (once).",
        &[Update],
        &[Field::str("token", "The wrapping token; absent: the request's own token.")],
    ),
    p(
        "wrapping/lookup",
        "A wrapping token's properties, without using it.",
        &[Read, Update],
        &[Field::str("token", "The wrapping token.")],
    ),
    p(
        "wrapping/rewrap",
        "Move wrapped data to a new wrapping token.",
        &[Update],
        &[Field::str("token", "The wrapping token.")],
    ),
    p(
        "internal/specs/openapi",
        "The OpenAPI document of every mounted path and of sys/.",
        &[Read],
        &[],
    ),
    p(
        "internal/ui/mounts/{path*}",
        "The mount serving a path (type, options): any token with \
        a capability inside the mount may ask.",
        &[Read],
        &[MOUNT_PATH],
    ),
    p(
        "leases",
        "The leases whose revocation is failing and being retried.",
        &[Read],
        &[Field::str("type", "Only `irrevocable`.")],
    ),
    p(
        "leases/lookup",
        "A lease's properties (write), or the lease ids at the top (LIST).",
        &[List, Update],
        &[LEASE_ID],
    ),
    p(
        "leases/lookup/{prefix*}",
        "The lease ids below a prefix (LIST), or a lease's properties \
        (write).",
        &[List, Update],
        &[PREFIX, LEASE_ID],
    ),
    p(
        "leases/renew",
        "Renew a lease.",
        &[Update],
        &[LEASE_ID, Field::duration("increment", "The TTL asked for, from now.")],
    ),
    p(
        "leases/renew/{url_lease_id*}",
        "Renew a lease.",
        &[Update],
        &[URL_LEASE_ID, Field::duration("increment", "The TTL asked for, from now.")],
    ),
    p(
        "leases/revoke",
        "Revoke a lease.",
        &[Update],
        &[
            LEASE_ID,
            Field::bool("sync", "Wait for the revocation (default true); false: 202 at once."),
        ],
    ),
    p(
        "leases/revoke/{url_lease_id*}",
        "Revoke a lease.",
        &[Update],
        &[
            URL_LEASE_ID,
            Field::bool("sync", "Wait for the revocation (default true); false: 202 at once."),
        ],
    ),
    p("leases/revoke-prefix/{prefix*}", "Revoke every lease below a prefix.", &[Update], &[PREFIX]),
    p(
        "leases/revoke-force/{prefix*}",
        "Forget every lease below a prefix, even where the \
        engine fails to revoke.",
        &[Update],
        &[PREFIX],
    ),
    p("leases/tidy", "Remove dangling lease index entries.", &[Update], &[]),
    p("renew", "Older path of leases/renew.", &[Update], &[LEASE_ID]),
    p("renew/{url_lease_id*}", "Older path of leases/renew.", &[Update], &[URL_LEASE_ID]),
    p("revoke", "Older path of leases/revoke.", &[Update], &[LEASE_ID]),
    p("revoke/{url_lease_id*}", "Older path of leases/revoke.", &[Update], &[URL_LEASE_ID]),
    p("revoke-prefix/{prefix*}", "Older path of leases/revoke-prefix.", &[Update], &[PREFIX]),
    p("revoke-force/{prefix*}", "Older path of leases/revoke-force.", &[Update], &[PREFIX]),
    p("mounts", "The secrets engines mounted.", &[Read], &[]),
    p("mounts/{path}/tune", "A secrets engine's tunable settings.", &[Read, Update], TUNE),
    p(
        "mounts/{path*}",
        "Mount (write), read or unmount (delete) a secrets engine; a path \
        ending in /tune is its tuning.",
        &[Read, Update, Delete],
        ENABLE,
    ),
    p(
        "remount",
        "Move a secrets engine or an auth method (`auth/...`) to another path, with its data \
        and leases.",
        &[Update],
        &[
            Field::str("from", "The mount's path now.").required(),
            Field::str("to", "Its new path.").required(),
        ],
    ),
    p(
        "remount/status/{migration_id}",
        "The status of a move made with sys/remount.",
        &[Read],
        &[Field::str("migration_id", "The id sys/remount answered.")],
    ),
    p("auth", "The auth methods enabled.", &[Read], &[]),
    p("auth/{path}/tune", "An auth method's tunable settings.", &[Read, Update], TUNE),
    p(
        "auth/{path*}",
        "Enable (write), read or disable (delete) an auth method; a path ending in \
        /tune is its tuning.",
        &[Read, Update, Delete],
        ENABLE,
    ),
    p("policy", "The ACL policies' names (Vault's older API).", &[Read, List], &[]),
    p(
        "policy/{name*}",
        "An ACL policy (Vault's older API: its text is `rules`).",
        &[Read, Update, Delete],
        &[
            ACL_NAME,
            Field::str("rules", "The policy, in HCL (or base64 of it)."),
            Field::str("policy", "Same as rules."),
        ],
    ),
    p("policies/acl", "The ACL policies' names.", &[List], &[]),
    p(
        "policies/acl/{name*}",
        "An ACL policy.",
        &[Read, Update, Delete],
        &[ACL_NAME, Field::str("policy", "The policy, in HCL (or base64 of it).")],
    ),
    p("policies/password", "The password policies' names.", &[List], &[]),
    p(
        "quotas/config",
        "The quota settings: audit and headers for rate-limited requests, exempt paths.",
        &[Read, Update],
        &[
            Field::bool("enable_rate_limit_audit_logging", "Audit requests a quota refuses."),
            Field::bool("enable_rate_limit_response_headers", "Send X-Ratelimit-* headers."),
            Field::comma_list("rate_limit_exempt_paths", "Paths no rate limit quota covers."),
        ],
    ),
    p("quotas/rate-limit", "The rate limit quotas' names.", &[List], &[]),
    p(
        "quotas/rate-limit/{name}",
        "A rate limit quota: read, write or delete it.",
        &[Read, Update, Delete],
        &[
            Field::str("path", "A mount, or a path below one; empty for a global quota."),
            Field::str("role", "A login role on an auth mount (jwt, oidc, kubernetes, cert)."),
            Field::str("rate", "Requests allowed per interval, per client address.").required(),
            Field::duration("interval", "The interval (default 1s)."),
            Field::duration("block_interval", "How long an address over its rate is refused."),
            Field::bool("inheritable", "Recorded (Coffer has no namespaces)."),
            Field::str("type", "Ignored, as in Vault."),
        ],
    ),
    p(
        "policies/password/{name}/generate",
        "A password generated by a password policy.",
        &[Read],
        &[PASSWORD_NAME],
    ),
    p(
        "policies/password/{name*}",
        "A password policy.",
        &[Read, Update, Delete],
        &[PASSWORD_NAME, Field::str("policy", "The policy, in HCL (or base64 of it).")],
    ),
    p(
        "leaks/check",
        "Read: the key candidates are hashed with. Write: which hashes are live values, and where.",
        &[Read, Update],
        &[
            Field::str("key_id", "The key_id read from sys/leaks/check."),
            Field::str_list("hashes", "Lowercase hex HMAC-SHA256 of candidates (at most 10000)."),
        ],
    ),
    p(
        "leaks/report",
        "Confirm leaked values and revoke or rotate them; also GitHub's alert format.",
        &[Update],
        &[
            Field::str("key_id", "The key_id read from sys/leaks/check."),
            Field::str_list("hashes", "Lowercase hex HMAC-SHA256 of leaked values."),
            Field::bool("dry_run", "List what would be done, and do nothing."),
        ],
    ),
    p(
        "leaks/github/keys",
        "The public keys GitHub signs secret-scanning alerts with, as GitHub publishes them.",
        &[Read, Update, Delete],
        &[Field::str_list(
            "public_keys",
            "A list of {\"key_identifier\", \"key\"} objects (P-256 public keys in PEM).",
        )
        .unchecked()],
    ),
    p(
        "leaks/github",
        "GitHub's secret-scanning partner alerts, signed by GitHub; no token.",
        &[Update],
        &[],
    ),
    p("audit", "The audit devices enabled, with where each one's hash chain stands.", &[Read], &[]),
    p(
        "audit/{path*}",
        "Enable (write) or disable (delete) an audit device.",
        &[Update, Delete],
        &[
            AUDIT_PATH,
            Field::str("type", "`file` or `socket`.").required(),
            Field::str("description", "What the device is for."),
            Field::map("options", "The device's options (`file_path`, `address`, ...)."),
            Field::bool("local", "Recorded; Coffer has no replication."),
        ],
    ),
    p(
        "audit-hash/{path*}",
        "Hash a value with an audit device's salt, to find it in the log.",
        &[Update],
        &[AUDIT_PATH, Field::str("input", "The value to hash.").required()],
    ),
    p(
        "events/subscribe/{event_type*}",
        "Event notifications over a WebSocket (Vault's event subscription).",
        &[Read],
        &[
            Field::str("event_type", "The event type, or a pattern with `*`: `kv-v2/*`."),
            Field::bool("json", "Must be true: events are JSON (Vault's default is protobuf)."),
            Field::str("namespaces", "Vault's child-namespace patterns; no effect here."),
            Field::str("filter", "A go-bexpr filter: not supported (400)."),
        ],
    ),
    p(
        "agent/delivery",
        "Coffer only: an agent reports which secret paths it delivered where, or removed; any \
        live token may report about itself. Audited with its fields in clear; nothing is stored.",
        &[Update],
        DELIVERY,
    )
    .audit_in_clear(AuditClear { keys: super::agent::FIELDS, valid: super::agent::is_valid }),
    p(
        "detect/status",
        "Coffer only: whether detection is on, how many rules run, and the pipeline's counters \
        (received, processed, dropped, alerts, webhook deliveries).",
        &[Read],
        &[],
    ),
    p(
        "detect/alerts",
        "Coffer only: the most recent detection alerts, newest first (kept in memory), and the \
        pipeline's counters.",
        &[Read],
        &[Field::int("limit", "How many alerts at most (default 100).")],
    ),
    p("detect/rules", "Coffer only (sudo): the detection rules' names.", &[Read, List], &[]),
    p(
        "detect/rules/{name}",
        "Coffer only (sudo): a detection rule: read, write or delete it (docs/detect.md).",
        &[Read, Update, Delete],
        DETECT_RULE,
    ),
    p(
        "chaos/faults",
        "Coffer only, with `chaos { enabled = true }`: the chaos faults running (read, LIST), \
        start one (write), end them all (delete). Each ends by itself at its deadline.",
        &[Read, List, Update, Delete],
        FAULT,
    ),
    p(
        "chaos/faults/{id}",
        "Coffer only, with `chaos { enabled = true }`: one chaos fault (read); end it now \
        (delete).",
        &[Read, Delete],
        &[Field::str("id", "The fault's id, `fault-...`.")],
    ),
];

/// Paths that exist only when the server config enables them (`chaos { enabled = true }`).
pub(crate) fn gated(rel: &str) -> bool {
    rel == "chaos" || rel.starts_with("chaos/")
}

/// The request fields of `path` (a full API path) that audit entries show in clear for this
/// body: none unless a declaration says so and the body is one its handler accepts.
pub(crate) fn audit_clear_keys(path: &str, data: &Map<String, Value>) -> &'static [&'static str] {
    let Some(rel) = path.strip_prefix("sys/") else { return &[] };
    match matching(rel).find_map(|p| p.audit_clear) {
        Some(c) if (c.valid)(data) => c.keys,
        _ => &[],
    }
}

/// The declarations that match `rel` (a trailing `/` allowed, as the handlers allow it).
fn matching(rel: &str) -> impl Iterator<Item = &'static SysPath> + '_ {
    PATHS.iter().filter(move |p| matches(p.pattern, rel, true).is_some())
}

fn declares(p: &SysPath, op: Operation) -> bool {
    let op = if op == Operation::Create { Operation::Update } else { op };
    p.ops.contains(&op)
}

/// Refuses what no declaration serves: an undeclared path (404, naming it) or an operation no
/// matching declaration has (405).
pub(crate) fn check(rel: &str, op: Operation) -> Result<()> {
    let mut found = false;
    for p in matching(rel) {
        if declares(p, op) {
            return Ok(());
        }
        found = true;
    }
    if found {
        Err(Error::UnsupportedOperation)
    } else {
        Err(Error::UnsupportedPath(format!("sys/{rel}")))
    }
}

fn spec(p: &SysPath) -> Spec {
    Spec {
        pattern: p.pattern,
        synopsis: p.synopsis,
        fields: p.fields.iter().collect(),
        operations: p.ops.to_vec(),
        create_supported: false,
    }
}

/// Every declared path, for the OpenAPI document; the gated ones only when `chaos` is on.
pub(crate) fn specs(chaos: bool) -> Vec<Spec> {
    PATHS.iter().filter(|p| chaos || !gated(p.pattern)).map(spec).collect()
}

/// `?help=1` below `sys/`: the root help for `sys` itself, else the first declaration matching.
pub(crate) fn help(rel: &str, chaos: bool) -> Option<Help> {
    if !chaos && gated(rel) {
        return None;
    }
    if rel.is_empty() {
        let specs = specs(chaos);
        let text = root_help(
            "The system backend: seal, health, mounts, policies, leases, audit devices, \
             response wrapping and capabilities.",
            &specs,
        );
        return Some(Help { text, specs });
    }
    let s = spec(matching(rel).next()?);
    Some(Help { text: path_help(rel, &s), specs: vec![s] })
}

/// A path the pattern matches: each capture filled with `x`.
pub(crate) fn example(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|seg| if seg.starts_with('{') { "x" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// The patterns that need `sudo`, and those reachable without a token, as the ACL check
/// decides them (asked of an example path of each pattern).
pub(crate) fn special() -> (Vec<&'static str>, Vec<&'static str>) {
    let sudo =
        PATHS.iter().filter(|p| is_sudo_sys(&example(p.pattern))).map(|p| p.pattern).collect();
    let unauthenticated = PATHS
        .iter()
        .filter(|p| {
            let e = example(p.pattern);
            is_public_sys(&e) || is_unauthenticated_sys(&e)
        })
        .map(|p| p.pattern)
        .collect();
    (sudo, unauthenticated)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use coffer_storage::MemoryBackend;

    use super::*;
    use crate::logical::Request;
    use crate::{Core, CoreConfig, Registry};

    use crate::test_support::Nothing;

    /// Every declared operation of every declared path reaches a handler on a live core: none
    /// is refused as an unknown path or operation (it may be refused for its missing fields).
    #[tokio::test]
    async fn every_declared_sys_path_is_routed() {
        let mut registry = Registry::new();
        registry.register_secrets("cubbyhole", Arc::new(|_| Ok(Arc::new(Nothing))));
        let mut config = CoreConfig::default();
        config.chaos.enabled = true;
        let core = Core::new(Arc::new(MemoryBackend::new()), registry, config);
        let root = core.dev_setup(None).await.expect("dev setup").root_token;
        let mut probes: Vec<(Operation, String)> =
            PATHS.iter().flat_map(|p| p.ops.iter().map(|op| (*op, example(p.pattern)))).collect();
        // Sealing ends the probing: it goes last.
        probes.sort_by_key(|(_, path)| path == "seal");
        for (op, path) in probes {
            let req = Request::new(op, format!("sys/{path}")).with_token(root.expose());
            if let Err(e @ (Error::UnsupportedPath(_) | Error::UnsupportedOperation)) =
                core.handle(req).await
            {
                panic!("{} sys/{path}: {e}", op.as_str());
            }
        }
        assert!(core.is_sealed(), "the probe of sys/seal sealed the core");
    }

    /// The router serves nothing undeclared: an unknown path is a 404 naming it, an undeclared
    /// operation on a declared path a 405, whatever the handlers would do.
    #[test]
    fn undeclared_paths_and_operations_are_refused() {
        assert!(matches!(check("nope", Read), Err(Error::UnsupportedPath(p)) if p == "sys/nope"));
        assert!(matches!(check("seal", Read), Err(Error::UnsupportedOperation)));
        assert!(matches!(check("policies/password/x/generate", Update), Ok(())));
        assert!(matches!(check("mounts/a/b/tune", Update), Ok(())));
        assert!(matches!(check("leases/lookup/", List), Ok(())));
        assert!(check("init", Operation::Create).is_ok(), "create is served as update");
    }

    #[test]
    fn help_and_special_paths_come_from_the_declarations() {
        let h = help("mounts/secret/tune", false).expect("help");
        assert!(h.text.contains("Matching Route: mounts/{path}/tune"), "{}", h.text);
        assert!(help("nope", false).is_none());
        assert!(help("", false).expect("root").text.contains("    policies/acl/{name*}"));
        let (sudo, unauthenticated) = special();
        for s in ["seal", "rotate", "audit", "audit/{path*}", "auth/{path*}", "leases"] {
            assert!(sudo.contains(&s), "{s}: {sudo:?}");
        }
        assert!(!sudo.contains(&"auth/{path}/tune") && !sudo.contains(&"mounts/{path*}"));
        for u in ["init", "health", "seal-status", "unseal", "leader", "wrapping/lookup"] {
            assert!(unauthenticated.contains(&u), "{u}: {unauthenticated:?}");
        }
    }
}
