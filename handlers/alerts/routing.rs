//! Who an alert is for and which routes carry it. A credential's people are the
//! addresses in its `keyturn-owner` tag and its application's owners (their `mail`, else
//! a UPN that is an address); the tag can also name configured routes (a team's channel).
//!
//! - each route the tag names carries the alert, naming the people;
//! - the people are mailed through the mail route, when one is configured;
//! - an alert nothing else carries goes to the default route, naming whoever was found;
//! - without a default route it is unrouted, and the engine counts it.
//!
//! What could not be used (an owner without an address, a tag entry that is neither an
//! address nor a route) is reported back so the digest can say whose alerts go nowhere.

use std::collections::BTreeSet;

use crate::alerts::routes::{Channel, Route, RouteName};
use crate::domain::contact::MailAddress;
use crate::domain::inventory::InventoryCredential;

/// What routing needs from the settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingSettings {
    /// Every configured route: a `keyturn-owner` entry naming one sends there.
    pub routes: BTreeSet<RouteName>,
    /// The route owners' addresses are mailed through (the first `mail` route).
    pub mail_route: Option<RouteName>,
    /// Where an alert goes that nothing else carries.
    pub default_route: Option<RouteName>,
}

impl RoutingSettings {
    /// Routing over `routes`, with `default_route` (which must be one of them).
    pub fn new(routes: &[Route], default_route: Option<RouteName>) -> Self {
        Self {
            routes: routes.iter().map(|r| r.name.clone()).collect(),
            mail_route: routes
                .iter()
                .find(|r| r.channel == Channel::Mail)
                .map(|r| r.name.clone()),
            default_route,
        }
    }
}

/// One route an alert goes to, and the people it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub route: RouteName,
    pub people: Vec<MailAddress>,
}

/// Where an alert goes, and what could not be used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routed {
    pub deliveries: Vec<Delivery>,
    pub problems: Vec<String>,
}

/// Routes `credential` by `settings`.
pub fn route(credential: &InventoryCredential, settings: &RoutingSettings) -> Routed {
    let mut people: Vec<MailAddress> = Vec::new();
    let mut tagged_routes: Vec<RouteName> = Vec::new();
    let mut problems = Vec::new();
    if let Some(tag) = credential.owner_tag() {
        for (index, entry) in tag
            .split([',', ';', ' '])
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            if let Ok(address) = MailAddress::parse(entry) {
                people.push(address);
            } else if let Some(route) =
                RouteName::parse(entry).filter(|r| settings.routes.contains(r))
            {
                tagged_routes.push(route);
            } else {
                problems.push(format!(
                    "keyturn-owner entry {} is neither a mail address nor a configured route",
                    index + 1
                ));
            }
        }
    }
    for owner in &credential.owners {
        let address = [&owner.mail, &owner.user_principal_name]
            .into_iter()
            .flatten()
            .find_map(|text| MailAddress::parse(text).ok());
        match address {
            Some(address) => people.push(address),
            None => problems.push(format!(
                "owner {} has no mail address",
                owner.display_name.as_deref().unwrap_or("(unnamed)")
            )),
        }
    }
    people.sort();
    people.dedup();
    tagged_routes.sort();
    tagged_routes.dedup();

    let mut deliveries: Vec<Delivery> = tagged_routes
        .into_iter()
        .map(|route| Delivery {
            route,
            people: people.clone(),
        })
        .collect();
    if let Some(mail) = &settings.mail_route
        && !people.is_empty()
        && !deliveries.iter().any(|d| &d.route == mail)
    {
        deliveries.push(Delivery {
            route: mail.clone(),
            people: people.clone(),
        });
    }
    // A mail route named in the tag with nobody to mail cannot deliver.
    deliveries.retain(|d| Some(&d.route) != settings.mail_route.as_ref() || !d.people.is_empty());
    if deliveries.is_empty()
        && let Some(default) = &settings.default_route
    {
        deliveries.push(Delivery {
            route: default.clone(),
            people,
        });
    }
    Routed {
        deliveries,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;

    use super::*;
    use crate::domain::inventory::{
        CredentialHandle, CredentialKind, CredentialSource, Owner, SweepId,
    };
    use crate::domain::names::{VaultName, VaultUrl};

    fn credential(tag: Option<&str>, owners: Vec<Owner>) -> InventoryCredential {
        let mut tags = BTreeMap::new();
        if let Some(tag) = tag {
            tags.insert("keyturn-owner".to_owned(), tag.to_owned());
        }
        InventoryCredential {
            source: CredentialSource::Vault {
                subscription: None,
                name: "kv-prod".parse::<VaultName>().expect("a name"),
                uri: VaultUrl::parse("https://kv-prod.vault.azure.net/").expect("a URL"),
            },
            kind: CredentialKind::Secret,
            name: "db-password".to_owned(),
            handle: CredentialHandle::VaultObject {
                name: "db-password".to_owned(),
                version: None,
                versions: None,
            },
            enabled: true,
            created: None,
            updated: None,
            not_before: None,
            expires: None,
            content_type: None,
            tags,
            certificate: None,
            key: None,
            directory: None,
            owners,
            managed: false,
            scanned_at: Utc::now(),
            sweep: SweepId::parse("s1").expect("an id"),
        }
    }

    fn name(text: &str) -> RouteName {
        RouteName::parse(text).expect("a route name")
    }

    fn settings(mail: bool, default: Option<&str>) -> RoutingSettings {
        let mut routes: BTreeSet<RouteName> = ["ops", "platform"].into_iter().map(name).collect();
        if mail {
            routes.insert(name("owners"));
        }
        RoutingSettings {
            routes,
            mail_route: mail.then(|| name("owners")),
            default_route: default.map(name),
        }
    }

    fn owner(display: &str, mail: Option<&str>, upn: Option<&str>) -> Owner {
        Owner {
            display_name: Some(display.to_owned()),
            mail: mail.map(str::to_owned),
            user_principal_name: upn.map(str::to_owned),
            ..Owner::default()
        }
    }

    fn routes_of(routed: &Routed) -> Vec<(&str, Vec<&str>)> {
        routed
            .deliveries
            .iter()
            .map(|d| {
                (
                    d.route.as_str(),
                    d.people.iter().map(MailAddress::as_str).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn application_owners_are_mailed_through_the_mail_route() {
        let routed = route(
            &credential(
                None,
                vec![
                    owner("Alice", Some("alice@contoso.com"), None),
                    owner("Bob", None, Some("bob@contoso.com")),
                ],
            ),
            &settings(true, Some("ops")),
        );
        assert_eq!(
            routes_of(&routed),
            [("owners", vec!["alice@contoso.com", "bob@contoso.com"])]
        );
        assert!(routed.problems.is_empty());
    }

    #[test]
    fn an_owner_tag_names_people_and_routes() {
        let routed = route(
            &credential(Some("platform, carol@contoso.com"), vec![]),
            &settings(true, Some("ops")),
        );
        assert_eq!(
            routes_of(&routed),
            [
                ("platform", vec!["carol@contoso.com"]),
                ("owners", vec!["carol@contoso.com"])
            ]
        );
    }

    #[test]
    fn without_a_mail_route_people_are_named_on_the_default_route() {
        let routed = route(
            &credential(Some("carol@contoso.com"), vec![]),
            &settings(false, Some("ops")),
        );
        assert_eq!(routes_of(&routed), [("ops", vec!["carol@contoso.com"])]);
    }

    #[test]
    fn unusable_owners_and_tag_entries_are_reported_and_the_default_route_carries_the_alert() {
        let routed = route(
            &credential(
                Some("team-x"),
                vec![owner("Dana", None, Some("dana_ext#EXT#"))],
            ),
            &settings(true, Some("ops")),
        );
        assert_eq!(routes_of(&routed), [("ops", vec![])]);
        assert_eq!(routed.problems.len(), 2, "{:?}", routed.problems);
        assert!(routed.problems[1].contains("Dana"));
    }

    #[test]
    fn without_a_default_route_an_ownerless_alert_is_unrouted() {
        let routed = route(&credential(None, vec![]), &settings(true, None));
        assert!(routed.deliveries.is_empty());
    }
}
