//! Errors of the plugin, each one line that says what went wrong and how to fix it.
//!
//! An apiserver call fails in a handful of ways a user can act on: the hub cannot be reached, the
//! credentials are rejected, the gpufed API is not installed, the object does not exist, or RBAC
//! forbids the call. [`classify`] turns a `kube::Error` plus what we were doing ([`Call`]) into one
//! of those; it is pure, so every case is unit-tested without a cluster.

use std::path::PathBuf;

/// Result of the plugin.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable kubeconfig (missing file, unknown context, bad YAML).
    #[error("cannot load the kubeconfig: {0}; check --kubeconfig/--context")]
    Kubeconfig(String),
    /// The apiserver did not answer.
    #[error("cannot reach the hub at {server}: {cause}; check --kubeconfig/--context")]
    Unreachable {
        /// The apiserver URL.
        server: String,
        /// The innermost cause, e.g. `connection refused`.
        cause: String,
    },
    /// The apiserver rejected the credentials.
    #[error(
        "the hub at {server} rejected the credentials (401 Unauthorized); check --kubeconfig/--context or renew the token"
    )]
    Unauthorized {
        /// The apiserver URL.
        server: String,
    },
    /// A chain step of `authorise` failed.
    #[error("{0}")]
    Chain(String),
    /// The CRDs are not installed.
    #[error(
        "the gpufed.io API is not installed on this cluster (no {resource}): install the gpufed-hub chart"
    )]
    ApiMissing {
        /// The resource we asked for, e.g. `computejobs.gpufed.io`.
        resource: String,
    },
    /// The named object does not exist.
    #[error("{kind} {name:?} not found{}", in_namespace(namespace))]
    NotFound {
        /// Lower-case kind, e.g. `computejob`.
        kind: String,
        /// Object name.
        name: String,
        /// Its namespace, for namespaced kinds.
        namespace: Option<String>,
    },
    /// RBAC denied the call.
    #[error(
        "forbidden: {who}cannot {verb} {resource}{}; ask the hub's admin for that permission or use another --context",
        in_namespace(namespace)
    )]
    Forbidden {
        /// `User "alice" ` when the apiserver named the user, else empty.
        who: String,
        /// The verb, e.g. `list`.
        verb: String,
        /// The resource, e.g. `computejobs.gpufed.io`.
        resource: String,
        /// The namespace of the call, if any.
        namespace: Option<String>,
    },
    /// Any other answer of the apiserver.
    #[error(
        "cannot {verb} {resource}{}: {message} ({code})",
        in_namespace(namespace)
    )]
    Api {
        /// The verb.
        verb: String,
        /// The resource.
        resource: String,
        /// The namespace of the call, if any.
        namespace: Option<String>,
        /// HTTP status code.
        code: u16,
        /// The apiserver's message.
        message: String,
    },
    /// A MemberCluster that has not joined its pool yet.
    #[error("membercluster {name:?} has not joined yet: {why}")]
    NotJoined {
        /// The member.
        name: String,
        /// The Joined condition's message and reason, or that it has none yet.
        why: String,
    },
    /// The hub's kubeconfig Secret for a member exists but holds no kubeconfig.
    #[error(
        "secret {name:?} in namespace {namespace:?} has no {key:?} key: the hub has not finished registering the member; try again shortly"
    )]
    EmptySecret {
        /// Secret name.
        name: String,
        /// Its namespace.
        namespace: String,
        /// The missing key.
        key: String,
    },
    /// A local file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Output could not be encoded.
    #[error("cannot encode the output as {format}: {message}")]
    Encode {
        /// `JSON` or `YAML`.
        format: &'static str,
        /// The encoder's message.
        message: String,
    },
    /// A job's log cannot be read (`logs`): the hub's or the member's reason, or a timeout.
    #[error("{0}")]
    Logs(String),
    /// Open joining (`join --registration-url`) failed: the hub's reason and message, or why the
    /// request could not be made.
    #[error("{0}")]
    Registration(String),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

fn in_namespace(namespace: &Option<String>) -> String {
    namespace
        .as_ref()
        .map(|ns| format!(" in namespace {ns:?}"))
        .unwrap_or_default()
}

/// What a failed apiserver call was doing, for the error message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The verb, e.g. `get` or `list`.
    pub verb: &'static str,
    /// `plural.group` (`computejobs.gpufed.io`) or the plural of a core kind (`secrets`).
    pub resource: &'static str,
    /// Lower-case kind for "not found" messages, e.g. `computejob`.
    pub kind: &'static str,
    /// Whether the resource comes from the gpufed CRDs (a 404 on it may mean they are missing).
    pub gpufed: bool,
    /// The object, for `get`.
    pub name: Option<String>,
    /// The namespace of the call.
    pub namespace: Option<String>,
}

impl Call {
    /// A `list` of `resource`.
    pub fn list(resource: &'static str, kind: &'static str, namespace: Option<&str>) -> Call {
        Call {
            verb: "list",
            resource,
            kind,
            gpufed: resource.ends_with(".gpufed.io"),
            name: None,
            namespace: namespace.map(str::to_string),
        }
    }

    /// A `get` of `name`.
    pub fn get(
        resource: &'static str,
        kind: &'static str,
        name: &str,
        namespace: Option<&str>,
    ) -> Call {
        Call {
            name: Some(name.to_string()),
            verb: "get",
            ..Call::list(resource, kind, namespace)
        }
    }
}

/// Turns a failed call into the error a user can act on.
pub fn classify(err: kube::Error, call: &Call, server: &str) -> Error {
    match err {
        kube::Error::Api(status) => classify_status(&status, call, server),
        kube::Error::HyperError(_) | kube::Error::Service(_) => Error::Unreachable {
            server: server.to_string(),
            cause: root_cause(&err),
        },
        other => Error::Unreachable {
            server: server.to_string(),
            cause: root_cause(&other),
        },
    }
}

fn classify_status(status: &kube::core::Status, call: &Call, server: &str) -> Error {
    match status.code {
        401 => Error::Unauthorized {
            server: server.to_string(),
        },
        403 => Error::Forbidden {
            who: user_in(&status.message)
                .map(|u| format!("User {u:?} "))
                .unwrap_or_default(),
            verb: call.verb.to_string(),
            resource: call.resource.to_string(),
            namespace: call.namespace.clone(),
        },
        404 => {
            // A missing object comes back with its name in the details; a missing resource type
            // ("the server could not find the requested resource") without.
            let names_object = status.details.as_ref().is_some_and(|d| !d.name.is_empty());
            match (&call.name, names_object || !call.gpufed) {
                (Some(name), true) => Error::NotFound {
                    kind: call.kind.to_string(),
                    name: name.clone(),
                    namespace: call.namespace.clone(),
                },
                _ if call.gpufed => Error::ApiMissing {
                    resource: call.resource.to_string(),
                },
                _ => api_error(status, call),
            }
        }
        _ => api_error(status, call),
    }
}

fn api_error(status: &kube::core::Status, call: &Call) -> Error {
    Error::Api {
        verb: call.verb.to_string(),
        resource: call.resource.to_string(),
        namespace: call.namespace.clone(),
        code: status.code,
        message: status.message.clone(),
    }
}

/// `"alice"` from `... User "alice" cannot list ...`.
fn user_in(message: &str) -> Option<&str> {
    let rest = &message[message.find("User \"")? + 6..];
    Some(&rest[..rest.find('"')?])
}

/// The innermost cause of a transport error, worded like the OS says it (`connection refused`).
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current: &(dyn std::error::Error + 'static) = err;
    loop {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                std::io::ErrorKind::TimedOut => return "connection timed out".into(),
                std::io::ErrorKind::ConnectionReset => return "connection reset".into(),
                _ => {}
            }
        }
        match current.source() {
            Some(next) => current = next,
            None => return current.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;
    use kube::core::response::StatusDetails;

    const HUB: &str = "https://127.0.0.1:6443";

    fn status(code: u16, message: &str, name: Option<&str>) -> kube::Error {
        let mut s = Status::failure(message, "");
        s.code = code;
        s.details = name.map(|n| {
            serde_json::from_value::<StatusDetails>(serde_json::json!({ "name": n })).unwrap()
        });
        kube::Error::Api(Box::new(s))
    }

    fn get_job() -> Call {
        Call::get("computejobs.gpufed.io", "computejob", "x", Some("team-a"))
    }

    #[test]
    fn a_refused_connection_names_the_server_and_the_flags_to_check() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "os error 111");
        let err = kube::Error::Service(Box::new(io));
        let e = classify(err, &get_job(), HUB);
        assert_eq!(
            e.to_string(),
            "cannot reach the hub at https://127.0.0.1:6443: connection refused; check --kubeconfig/--context"
        );
    }

    #[test]
    fn an_unknown_transport_cause_is_shown_as_its_innermost_message() {
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Outer(#[source] std::io::Error);
        let inner = std::io::Error::other("dns error: no such host");
        let err = kube::Error::Service(Box::new(Outer(inner)));
        let e = classify(err, &get_job(), HUB).to_string();
        assert!(e.contains(": dns error: no such host;"), "{e}");
    }

    #[test]
    fn a_missing_job_is_named_with_its_namespace() {
        let e = classify(
            status(404, "computejobs.gpufed.io \"x\" not found", Some("x")),
            &get_job(),
            HUB,
        );
        assert_eq!(
            e.to_string(),
            "computejob \"x\" not found in namespace \"team-a\""
        );
    }

    #[test]
    fn a_404_without_an_object_means_the_crds_are_missing() {
        let msg = "the server could not find the requested resource";
        let list = Call::list("computejobs.gpufed.io", "computejob", Some("team-a"));
        for call in [list, get_job()] {
            let e = classify(status(404, msg, None), &call, HUB);
            assert_eq!(
                e.to_string(),
                "the gpufed.io API is not installed on this cluster (no computejobs.gpufed.io): install the gpufed-hub chart"
            );
        }
    }

    #[test]
    fn a_missing_core_object_is_not_found_even_without_details() {
        let call = Call::get("secrets", "secret", "s", Some("gpufed-member-a"));
        let e = classify(status(404, "not found", None), &call, HUB);
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
    }

    #[test]
    fn forbidden_says_who_may_not_do_what_where() {
        let msg = "computejobs.gpufed.io is forbidden: User \"alice\" cannot list resource \"computejobs\" in API group \"gpufed.io\" in the namespace \"team-a\"";
        let call = Call::list("computejobs.gpufed.io", "computejob", Some("team-a"));
        let e = classify(status(403, msg, None), &call, HUB);
        assert_eq!(
            e.to_string(),
            "forbidden: User \"alice\" cannot list computejobs.gpufed.io in namespace \"team-a\"; ask the hub's admin for that permission or use another --context"
        );
        let cluster_scoped = Call::list("memberclusters.gpufed.io", "membercluster", None);
        let e = classify(status(403, "forbidden", None), &cluster_scoped, HUB).to_string();
        assert!(
            e.starts_with("forbidden: cannot list memberclusters.gpufed.io;"),
            "{e}"
        );
    }

    #[test]
    fn rejected_credentials_point_at_the_kubeconfig() {
        let e = classify(status(401, "Unauthorized", None), &get_job(), HUB).to_string();
        assert!(
            e.contains("rejected the credentials (401 Unauthorized)"),
            "{e}"
        );
    }

    #[test]
    fn other_answers_keep_the_apiserver_message_and_code() {
        let e = classify(status(500, "etcd is down", None), &get_job(), HUB).to_string();
        assert_eq!(
            e,
            "cannot get computejobs.gpufed.io in namespace \"team-a\": etcd is down (500)"
        );
    }

    #[test]
    fn every_message_is_one_line() {
        let errors = [
            Error::NotJoined {
                name: "a".into(),
                why: "GpuPool \"x\" does not exist (PoolNotFound)".into(),
            },
            Error::Kubeconfig("failed to determine current context".into()),
        ];
        for e in errors {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}
