//! A createTask body as the API reads it: the bytes' syntax, the request read from them
//! (payload and extra straight to their compact text), the schema's checks and defaults, the
//! clock's checks and the size limit. Any bytes must end in a definition or an API error,
//! never a panic; a definition must round-trip through JSON and the log's codec, and its
//! payload text must be what printing the parsed tree gives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskfold::log::codec;
use taskfold::model::task::DEFAULT_MAX_DEADLINE;
use taskfold::model::{CreateTaskRequest, Slugid, TaskDefinition, Timestamp};

fuzz_target!(|bytes: &[u8]| {
    let Ok(request) = CreateTaskRequest::from_json(bytes) else {
        return;
    };
    let task_id: Slugid = "fN1SbArXTPSVFNUvaOlinQ".parse().unwrap();
    let payload = request.payload.clone();
    let extra = request.extra.clone();
    let Ok(definition) = request.into_definition(task_id) else {
        return;
    };

    // The compact texts are what printing the parsed tree gives.
    let tree: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(payload.as_str(), tree["payload"].to_string());
    if let Some(extra) = extra {
        assert_eq!(extra.as_str(), tree["extra"].to_string());
    }

    let now: Timestamp = "2026-11-22T10:00:00.000Z".parse().unwrap();
    let _ = definition.check_new(now, DEFAULT_MAX_DEADLINE);
    let text = serde_json::to_vec(&definition).unwrap();
    assert_eq!(definition.encoded_len(), text.len());
    assert!(definition.check_size(text.len()).is_ok());
    assert!(definition.check_size(text.len() - 1).is_err());
    let back: TaskDefinition = serde_json::from_slice(&text).unwrap();
    assert_eq!(back, definition);
    let encoded = codec::encode(&definition).unwrap();
    let decoded: TaskDefinition = codec::decode(&encoded).unwrap();
    assert_eq!(decoded, definition);
});
