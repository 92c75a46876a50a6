//! The tags on a Key Vault object (a JSON object of strings, as Key Vault answers them),
//! read as a rotation policy for each object type.
#![no_main]

use std::collections::BTreeMap;

use keyturn::domain::names::ObjectType;
use keyturn::rotation::tags::{self, PolicyDefaults};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tags) = serde_json::from_slice::<BTreeMap<String, String>>(data) else {
        return;
    };
    let defaults = PolicyDefaults::new(90, 30, 7).expect("valid defaults");
    for object_type in [ObjectType::Secret, ObjectType::Certificate, ObjectType::Key] {
        let Ok(managed) = tags::managed(object_type, &tags, &defaults) else {
            continue;
        };
        // The tags a new version inherits keep its policy.
        let inherited = tags::inherited_tags(&tags);
        let again = tags::policy(object_type, &inherited, &defaults).expect("inherited tags read");
        assert_eq!(again, managed.as_ref().map(|m| m.policy.clone()));
        let _ = tags::with_last_error(&tags, "fuzz");
    }
});
