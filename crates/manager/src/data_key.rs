//! A manager's data encryption key, as SwarmKit has it: each manager seals its Raft store on
//! disk with its own data key (DEK), made when its manager role first starts and kept in its
//! swarm folder. The file's encoding is pure and lives here.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use raft_store::DataKey;
use serde::{Deserialize, Serialize};

/// The data key file, as JSON beside `state.json`.
#[derive(Serialize, Deserialize)]
struct DataKeyFile {
    /// Base64: the 32-byte key.
    key: String,
}

/// The data key file's contents.
pub(crate) fn encode_data_key_file(key: &DataKey) -> Vec<u8> {
    let file = DataKeyFile {
        key: STANDARD_NO_PAD.encode(key.as_bytes()),
    };
    serde_json::to_vec_pretty(&file)
        .unwrap_or_else(|error| panic!("encoding a struct of strings cannot fail: {error}"))
}

/// Reads the data key file's contents; the error says what is wrong with them.
pub(crate) fn decode_data_key_file(bytes: &[u8]) -> Result<DataKey, String> {
    let file: DataKeyFile =
        serde_json::from_slice(bytes).map_err(|error| format!("not a data key file: {error}"))?;
    let stored = STANDARD_NO_PAD
        .decode(&file.key)
        .map_err(|error| format!("the key is not base64: {error}"))?;
    let length = stored.len();
    let key: [u8; DataKey::LEN] = stored
        .try_into()
        .map_err(|_| format!("the key holds {length} bytes, not {}", DataKey::LEN))?;
    Ok(DataKey::from_bytes(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_key_file_holds_the_key() {
        let data_key = DataKey::from_bytes([9; DataKey::LEN]);
        let read = decode_data_key_file(&encode_data_key_file(&data_key)).unwrap();
        assert_eq!(read.as_bytes(), data_key.as_bytes());
    }

    #[test]
    fn a_damaged_data_key_file_says_what_is_wrong() {
        let cases: [(&[u8], &str); 3] = [
            (b"{not json", "not a data key file"),
            (br#"{"key": "***"}"#, "not base64"),
            (br#"{"key": "AAAA"}"#, "holds 3 bytes, not 32"),
        ];
        for (bytes, problem) in cases {
            let error = decode_data_key_file(bytes).unwrap_err();
            assert!(error.contains(problem), "{error}");
        }
    }
}
