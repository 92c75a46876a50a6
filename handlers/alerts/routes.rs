//! Routes: the named channels alerts are delivered through, parsed from one line of
//! text:
//!
//! ```text
//! ops=teams:alerts-teams-ops;platform=slack:alerts-slack-platform;siem=cloudevents:alerts-siem;owners=mail
//! ```
//!
//! Each entry is `name=kind[:secret]`. A webhook kind (`teams`, `slack`, `cloudevents`)
//! names the Key Vault (or local vault) secret holding its URL, never the URL itself: the
//! URL authorises posting, so it is kept where secrets are kept and read at start-up.
//! `mail` sends through Graph from the configured mailbox and takes no secret.

use std::fmt;

use crate::domain::names::ObjectName;

/// Route names are short identifiers: they appear in logs, errors and `keyturn-owner`
/// tags, so they are restricted to what needs no quoting anywhere.
pub const ROUTE_NAME_MAX_LEN: usize = 40;

/// Why the routes setting was refused. Names the entry by position and the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    #[error("route {index}: expected name=kind[:secret]")]
    Shape { index: usize },
    #[error(
        "route {index}: a route name is 1 to {ROUTE_NAME_MAX_LEN} lower-case letters, digits or hyphens"
    )]
    Name { index: usize },
    #[error("route {index}: unknown kind {kind:?} (teams, slack, cloudevents or mail)")]
    Kind { index: usize, kind: String },
    #[error("route {index}: a {kind} route names the vault secret holding its webhook URL")]
    SecretMissing { index: usize, kind: &'static str },
    #[error("route {index}: a mail route takes no secret")]
    SecretNotAllowed { index: usize },
    #[error("route {index}: the secret name is not a Key Vault object name")]
    SecretName { index: usize },
    #[error("route {name:?} is defined twice")]
    Duplicate { name: String },
}

/// A route's name (`ops`, `platform-team`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteName(String);

impl RouteName {
    pub fn parse(text: &str) -> Option<Self> {
        let valid = (1..=ROUTE_NAME_MAX_LEN).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        valid.then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a route delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// A Teams Workflows webhook; the secret holds its URL.
    Teams { secret: ObjectName },
    /// A Slack incoming webhook; the secret holds its URL.
    Slack { secret: ObjectName },
    /// A generic webhook receiving CloudEvents; the secret holds its URL.
    CloudEvents { secret: ObjectName },
    /// Mail through Graph sendMail, to the alert's owners.
    Mail,
}

impl Channel {
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Teams { .. } => "teams",
            Channel::Slack { .. } => "slack",
            Channel::CloudEvents { .. } => "cloudevents",
            Channel::Mail => "mail",
        }
    }
}

/// One configured route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub name: RouteName,
    pub channel: Channel,
}

/// Parses the routes setting (`;`-separated entries; blank entries are ignored).
pub fn parse_routes(text: &str) -> Result<Vec<Route>, RouteError> {
    let mut routes: Vec<Route> = Vec::new();
    for (index, entry) in text
        .split(';')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .enumerate()
    {
        let index = index + 1;
        let (name, target) = entry.split_once('=').ok_or(RouteError::Shape { index })?;
        let name = RouteName::parse(name.trim()).ok_or(RouteError::Name { index })?;
        let (kind, secret) = match target.trim().split_once(':') {
            Some((kind, secret)) => (kind.trim(), Some(secret.trim())),
            None => (target.trim(), None),
        };
        let secret_for = |kind: &'static str| -> Result<ObjectName, RouteError> {
            let secret = secret
                .filter(|s| !s.is_empty())
                .ok_or(RouteError::SecretMissing { index, kind })?;
            ObjectName::parse(secret).map_err(|_| RouteError::SecretName { index })
        };
        let channel = match kind.to_ascii_lowercase().as_str() {
            "teams" => Channel::Teams {
                secret: secret_for("teams")?,
            },
            "slack" => Channel::Slack {
                secret: secret_for("slack")?,
            },
            "cloudevents" => Channel::CloudEvents {
                secret: secret_for("cloudevents")?,
            },
            "mail" if secret.is_some() => return Err(RouteError::SecretNotAllowed { index }),
            "mail" => Channel::Mail,
            other => {
                return Err(RouteError::Kind {
                    index,
                    kind: other.chars().take(20).collect(),
                });
            }
        };
        if routes.iter().any(|r| r.name == name) {
            return Err(RouteError::Duplicate {
                name: name.as_str().to_owned(),
            });
        }
        routes.push(Route { name, channel });
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_channel_kind_parses_with_its_secret() {
        let routes = parse_routes(
            "ops=teams:alerts-teams-ops; platform=slack:alerts-slack ;siem=cloudevents:siem-hook;owners=mail;",
        )
        .expect("valid routes");
        let kinds: Vec<(&str, &str)> = routes
            .iter()
            .map(|r| (r.name.as_str(), r.channel.kind()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("ops", "teams"),
                ("platform", "slack"),
                ("siem", "cloudevents"),
                ("owners", "mail")
            ]
        );
        assert_eq!(
            routes[0].channel,
            Channel::Teams {
                secret: ObjectName::parse("alerts-teams-ops").expect("name")
            }
        );
    }

    #[test]
    fn malformed_routes_are_refused_by_position() {
        let cases = [
            ("ops", RouteError::Shape { index: 1 }),
            ("Ops=mail", RouteError::Name { index: 1 }),
            (
                "owners=mail;ops=teams",
                RouteError::SecretMissing {
                    index: 2,
                    kind: "teams",
                },
            ),
            ("ops=mail:x", RouteError::SecretNotAllowed { index: 1 }),
            ("ops=slack:not_a_name", RouteError::SecretName { index: 1 }),
            (
                "ops=pager:x",
                RouteError::Kind {
                    index: 1,
                    kind: "pager".to_owned(),
                },
            ),
            (
                "ops=mail;ops=mail",
                RouteError::Duplicate {
                    name: "ops".to_owned(),
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_routes(text), Err(expected), "{text}");
        }
    }

    /// A route written back as the setting spells it.
    fn render(route: &Route) -> String {
        match &route.channel {
            Channel::Teams { secret }
            | Channel::Slack { secret }
            | Channel::CloudEvents { secret } => {
                format!("{}={}:{}", route.name, route.channel.kind(), secret)
            }
            Channel::Mail => format!("{}=mail", route.name),
        }
    }

    fn any_target() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("mail".to_owned()),
            Just("MAIL".to_owned()),
            (
                prop::sample::select(vec!["teams", "slack", "cloudevents", "Teams", "SLACK"]),
                "[a-zA-Z0-9-]{1,127}",
            )
                .prop_map(|(kind, secret)| format!("{kind} : {secret}")),
        ]
    }

    proptest! {
        #[test]
        fn routes_written_any_way_parse_and_render_back(
            entries in prop::collection::btree_map("[a-z0-9-]{1,40}", any_target(), 0..6),
            separator in prop::sample::select(vec![";", " ; ", ";;", ";\t"]),
        ) {
            let text = entries
                .iter()
                .map(|(name, target)| format!(" {name} = {target} "))
                .collect::<Vec<_>>()
                .join(separator);

            let routes = parse_routes(&text).expect("valid routes");

            let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
            prop_assert_eq!(names, entries.keys().map(String::as_str).collect::<Vec<_>>());
            let rendered = routes.iter().map(render).collect::<Vec<_>>().join(";");
            prop_assert_eq!(parse_routes(&rendered), Ok(routes));
        }

        #[test]
        fn any_text_is_routes_or_refused_without_echoing_a_secret(
            text in ".{0,60}",
            token in "[a-z]{12}",
        ) {
            if let Ok(routes) = parse_routes(&text) {
                let rendered = routes.iter().map(render).collect::<Vec<_>>().join(";");
                prop_assert_eq!(parse_routes(&rendered), Ok(routes));
            }
            let with_secret = format!("{text};ops=slack:https://hooks.example/{token}");
            if let Err(error) = parse_routes(&with_secret) {
                prop_assert!(!error.to_string().contains(&token), "{error}");
            }
        }
    }

    #[test]
    fn a_webhook_url_given_in_place_of_a_secret_name_is_refused_without_being_echoed() {
        let error = parse_routes("ops=slack:https://hooks.slack.com/services/T0/B0/tok3n")
            .expect_err("a URL is not a secret name");
        assert!(!error.to_string().contains("tok3n"));
    }
}
