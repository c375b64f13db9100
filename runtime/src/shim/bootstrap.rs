//! containerd's shim start protocol, both forms. From 2.3, containerd writes a protobuf
//! `containerd.runtime.bootstrap.v1.BootstrapParams` to the stdin of `start` and reads a
//! `BootstrapResult` from its stdout, then speaks the result's task API version (3).
//! containerd 1.6–2.2 write the runtime options as a bare `google.protobuf.Any` (or nothing)
//! and read the socket address as plain text, which every one of them takes as task API v2.
//!
//! Nothing on the wire marks the form, and a legacy `Any` decodes as `BootstrapParams` too
//! (its `type_url` lands in field 1, its `value` in field 2). So params count only when
//! their instance id and namespace are the `-id` and `-namespace` of the command line, which
//! containerd 2.3 still passes (containerd's own shims check the same way). The messages are
//! few and fixed, so they are coded here field by field rather than generated.

use containerd_shim::protos::protobuf::rt::WireType;
use containerd_shim::protos::protobuf::{CodedInputStream, CodedOutputStream};

/// The task API version Hako answers a 2.3 caller with (it serves v2 and v3 on one socket).
pub const TASK_API_VERSION: i32 = 3;
/// At most this much is read from `start`'s stdin (containerd writes a few hundred bytes).
pub const MAX_INPUT: u64 = 1 << 20;

/// What containerd 2.3 tells a shim at `start` (the fields Hako uses).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BootstrapParams {
    pub instance_id: String,
    pub namespace: String,
    /// containerd's open log-level enum: 0 info, negative more verbose, positive less.
    pub log_level: i32,
    pub containerd_version: String,
    pub containerd_ttrpc_address: String,
    pub containerd_grpc_address: String,
    pub containerd_binary: String,
    /// Where the shim's socket goes, when containerd chooses.
    pub socket_dir: Option<String>,
}

/// How the caller started the shim, so the reply takes the same form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartForm {
    /// containerd 2.3+: protobuf params in, protobuf result out, task API v3.
    Bootstrap(BootstrapParams),
    /// containerd 1.6–2.2: options (or nothing) in, the plain address out, task API v2.
    Legacy,
}

impl StartForm {
    /// Tells the form of `input` for the shim started as `-id id -namespace namespace`.
    pub fn of(input: &[u8], id: &str, namespace: &str) -> Self {
        match decode_params(input) {
            Ok(p)
                if !p.instance_id.is_empty() && p.instance_id == id && p.namespace == namespace =>
            {
                Self::Bootstrap(p)
            }
            _ => Self::Legacy,
        }
    }

    /// What `start` prints for a shim serving `address` (`unix:///...`).
    pub fn reply(&self, address: &str) -> Vec<u8> {
        match self {
            Self::Bootstrap(_) => encode_result(TASK_API_VERSION, address, "ttrpc"),
            Self::Legacy => address.as_bytes().to_vec(),
        }
    }
}

fn malformed(what: &str) -> containerd_shim::protos::protobuf::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned()).into()
}

/// Decodes `BootstrapParams` (proto3: unknown fields skipped, repeated `extensions` ignored).
pub fn decode_params(
    input: &[u8],
) -> Result<BootstrapParams, containerd_shim::protos::protobuf::Error> {
    let mut p = BootstrapParams::default();
    let mut s = CodedInputStream::from_bytes(input);
    while let Some(tag) = s.read_raw_tag_or_eof()? {
        let wire = WireType::new(tag & 7).ok_or_else(|| malformed("bad wire type"))?;
        let want = |expected: WireType| {
            if wire == expected {
                Ok(())
            } else {
                Err(malformed("a known field has another wire type"))
            }
        };
        let string = |s: &mut CodedInputStream| {
            want(WireType::LengthDelimited)?;
            s.read_string()
        };
        match tag >> 3 {
            1 => p.instance_id = string(&mut s)?,
            2 => p.namespace = string(&mut s)?,
            3 => {
                want(WireType::Varint)?;
                p.log_level = s.read_int32()?;
            }
            4 => p.containerd_version = string(&mut s)?,
            5 => p.containerd_ttrpc_address = string(&mut s)?,
            6 => p.containerd_grpc_address = string(&mut s)?,
            7 => p.containerd_binary = string(&mut s)?,
            9 => p.socket_dir = Some(string(&mut s)?),
            _ => s.skip_field(wire)?,
        }
    }
    Ok(p)
}

/// Encodes `BootstrapResult { version, address, protocol }`.
pub fn encode_result(version: i32, address: &str, protocol: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = CodedOutputStream::vec(&mut out);
    // Writing to a Vec cannot fail.
    let _ = s
        .write_int32(1, version)
        .and_then(|()| s.write_string(2, address))
        .and_then(|()| s.write_string(3, protocol))
        .and_then(|()| s.flush());
    drop(s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `BootstrapParams` as containerd 2.3 writes it (proto field by field), with an
    /// extension and a field this decoder does not know.
    fn params_bytes(id: &str, ns: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = CodedOutputStream::vec(&mut out);
        s.write_string(1, id).unwrap();
        s.write_string(2, ns).unwrap();
        s.write_int32(3, -4).unwrap();
        s.write_string(4, "2.3.4").unwrap();
        s.write_string(5, "/run/containerd/containerd.sock.ttrpc")
            .unwrap();
        s.write_string(6, "/run/containerd/containerd.sock")
            .unwrap();
        s.write_string(7, "/usr/bin/containerd").unwrap();
        // extensions: Extension { value: Any { type_url, value } }
        let any = {
            let mut a = Vec::new();
            let mut o = CodedOutputStream::vec(&mut a);
            o.write_string(1, "runtimeoptions.v1.Options").unwrap();
            o.write_bytes(2, b"\x12\x05/a/b").unwrap();
            o.flush().unwrap();
            drop(o);
            a
        };
        let ext = {
            let mut e = Vec::new();
            let mut o = CodedOutputStream::vec(&mut e);
            o.write_bytes(1, &any).unwrap();
            o.flush().unwrap();
            drop(o);
            e
        };
        s.write_bytes(8, &ext).unwrap();
        s.write_string(9, "/run/containerd/s").unwrap();
        s.write_uint64(42, 7).unwrap();
        s.flush().unwrap();
        drop(s);
        out
    }

    #[test]
    fn containerd_2_3_params_are_told_by_their_identity() {
        let b = params_bytes("task1", "k8s.io");
        let StartForm::Bootstrap(p) = StartForm::of(&b, "task1", "k8s.io") else {
            panic!("not taken as bootstrap params");
        };
        assert_eq!(p.log_level, -4);
        assert_eq!(
            p.containerd_ttrpc_address,
            "/run/containerd/containerd.sock.ttrpc"
        );
        assert_eq!(p.socket_dir.as_deref(), Some("/run/containerd/s"));
        // Another task's params (or another namespace's) are not this start's.
        assert_eq!(StartForm::of(&b, "task2", "k8s.io"), StartForm::Legacy);
        assert_eq!(StartForm::of(&b, "task1", "default"), StartForm::Legacy);
    }

    #[test]
    fn legacy_input_is_legacy() {
        // Nothing, a runtime-options Any (decodes as params, but its "id" is a type URL),
        // and garbage.
        assert_eq!(StartForm::of(b"", "t", "ns"), StartForm::Legacy);
        let mut any = Vec::new();
        let mut o = CodedOutputStream::vec(&mut any);
        o.write_string(1, "containerd.runc.v1.Options").unwrap();
        o.write_bytes(2, b"\x08\x01").unwrap();
        o.flush().unwrap();
        drop(o);
        assert_eq!(StartForm::of(&any, "t", "ns"), StartForm::Legacy);
        assert_eq!(StartForm::of(b"\xff\xff\xff", "t", "ns"), StartForm::Legacy);
        assert_eq!(StartForm::Legacy.reply("unix:///x"), b"unix:///x");
    }

    #[test]
    fn the_result_decodes_as_containerd_reads_it() {
        let b = StartForm::Bootstrap(BootstrapParams::default()).reply("unix:///run/s/ab");
        let mut s = CodedInputStream::from_bytes(&b);
        assert_eq!(s.read_raw_tag_or_eof().unwrap(), Some(1 << 3));
        assert_eq!(s.read_int32().unwrap(), 3);
        assert_eq!(s.read_raw_tag_or_eof().unwrap(), Some(2 << 3 | 2));
        assert_eq!(s.read_string().unwrap(), "unix:///run/s/ab");
        assert_eq!(s.read_raw_tag_or_eof().unwrap(), Some(3 << 3 | 2));
        assert_eq!(s.read_string().unwrap(), "ttrpc");
        assert_eq!(s.read_raw_tag_or_eof().unwrap(), None);
    }
}
