//! The four TPM 2.0 commands measured launch needs, marshalled by hand, and
//! the transports that carry them.
//!
//! Commands (TPM 2.0 Library, Part 3): `TPM2_PCR_Extend` (with an empty
//! password session, as a PCR of the PC Client profile's locality 0 asks),
//! `TPM2_PCR_Read` (one PCR of the SHA-256 bank), `TPM2_ReadClock` (its
//! `resetCount` and `restartCount` say which PCR lifetime the host is in:
//! both change whenever PCRs are reset) and `TPM2_Startup(TPM_SU_CLEAR)`,
//! sent only when a TPM answers `TPM_RC_INITIALIZE` (a fresh swtpm started
//! without `--flags startup-clear`; a host's TPM was started by firmware).
//! Each is a fixed-format big-endian structure of a few dozen bytes; the
//! answers are checked for their size and response code, and nothing is
//! read past what the header announces (at most [`MAX_RESPONSE`]).
//!
//! Why not a crate: `tss-esapi`, the maintained Rust TSS, wraps the C
//! tpm2-tss libraries (libtss2-esys, -mu, -tctildr and a TCTI module found
//! by `dlopen` at run time), which every host would have to install and
//! the `husk` binary — the VMM of every pod — would link, for four
//! commands. Their formats are fixed and small (the largest is 65 bytes),
//! so they are written here, with unit tests against the layouts of the
//! specification, and exercised against Debian's swtpm and cross-checked
//! with tpm2-tools (`tpm2_pcrread`, `tpm2_readclock`) by the tests. No
//! cryptography is involved on this side: the digests are SHA-256 (the
//! `sha2` crate the image store already uses), and a quote's signature is
//! for the remote verifier to check, not husk.
//!
//! Transports (the addresses follow tpm2-tss's TCTI configuration strings,
//! so the same string works with `tpm2_pcrread -T`):
//! - `device:/dev/tpmrm0` — the kernel's TPM resource manager (the default
//!   when that device exists); `device:PATH` any TPM character device;
//! - `swtpm:host=HOST,port=PORT` (also `swtpm:HOST:PORT`) — swtpm's TCP
//!   server socket, which carries raw TPM commands;
//! - `swtpm:path=PATH` — swtpm's Unix socket (`--server type=unixio,path=`);
//! - `none` — no TPM: the launch is logged, not extended.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// TPM_ALG_SHA256.
const ALG_SHA256: u16 = 0x000B;
const ST_NO_SESSIONS: u16 = 0x8001;
const ST_SESSIONS: u16 = 0x8002;
const CC_STARTUP: u32 = 0x0000_0144;
const CC_PCR_EXTEND: u32 = 0x0000_0182;
const CC_PCR_READ: u32 = 0x0000_017E;
const CC_READ_CLOCK: u32 = 0x0000_0181;
/// TPM_RS_PW: the password authorization session.
const RS_PW: u32 = 0x4000_0009;
const SU_CLEAR: u16 = 0x0000;
pub const RC_SUCCESS: u32 = 0x000;
/// TPM_RC_INITIALIZE: TPM2_Startup has not been run (or ran already).
pub const RC_INITIALIZE: u32 = 0x100;
/// Warnings after which a command is simply sent again.
const RC_RETRY: [u32; 3] = [0x922, 0x908, 0x90A];
/// The largest answer read (PCR_Read's with one digest is 50 bytes).
pub const MAX_RESPONSE: usize = 4096;
/// How long a socket TPM may take to answer one command.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);
/// The PCRs a TPM 2.0 of the PC Client profile has.
pub const PCR_COUNT: u32 = 24;

/// Where the TPM is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A TPM character device (`/dev/tpmrm0`).
    Device(PathBuf),
    /// swtpm's server socket over TCP.
    Tcp(String, u16),
    /// swtpm's server socket over a Unix socket.
    Unix(PathBuf),
    /// No TPM.
    None,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Device(p) => write!(f, "device:{}", p.display()),
            Address::Tcp(h, p) => write!(f, "swtpm:host={h},port={p}"),
            Address::Unix(p) => write!(f, "swtpm:path={}", p.display()),
            Address::None => f.write_str("none"),
        }
    }
}

impl Address {
    /// Parses a TCTI-like address (see the module's doc).
    pub fn parse(text: &str) -> Result<Address, String> {
        let bad = |why: &str| {
            Err(format!(
                "TPM address {text:?}: {why} (expected device:PATH, swtpm:host=HOST,port=PORT, swtpm:HOST:PORT, swtpm:path=PATH or none)"
            ))
        };
        if text == "none" {
            return Ok(Address::None);
        }
        if text == "device" {
            return Ok(Address::Device("/dev/tpmrm0".into()));
        }
        if let Some(path) = text.strip_prefix("device:") {
            if !path.starts_with('/') {
                return bad("the device must be an absolute path");
            }
            return Ok(Address::Device(path.into()));
        }
        let Some(rest) = text.strip_prefix("swtpm:") else {
            return bad("unknown kind");
        };
        if rest.contains('=') {
            let (mut host, mut port, mut path) = (None, None, None);
            for kv in rest.split(',') {
                match kv.split_once('=') {
                    Some(("host", h)) if !h.is_empty() => host = Some(h.to_owned()),
                    Some(("port", p)) => port = p.parse::<u16>().ok().filter(|p| *p != 0),
                    Some(("path", p)) if p.starts_with('/') => path = Some(PathBuf::from(p)),
                    _ => return bad(&format!("cannot read {kv:?}")),
                }
            }
            return match (host, port, path) {
                (None, None, Some(p)) => Ok(Address::Unix(p)),
                (h, Some(p), None) => Ok(Address::Tcp(h.unwrap_or_else(|| "localhost".into()), p)),
                _ => bad("give port (and host), or path"),
            };
        }
        match rest.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => match p.parse::<u16>() {
                Ok(p) if p != 0 => Ok(Address::Tcp(h.trim_matches(['[', ']']).to_owned(), p)),
                _ => bad("bad port"),
            },
            _ => bad("expected HOST:PORT"),
        }
    }
}

/// What went wrong talking to the TPM.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    #[error("cannot reach the TPM at {address}: {source}")]
    Open {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TPM at {address}: {source}")]
    Io {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TPM at {address}: {command} failed with response code {code:#x}{}", rc_name(*code))]
    Command {
        address: String,
        command: &'static str,
        code: u32,
    },
    #[error("TPM at {address}: malformed answer to {command}: {why}")]
    Malformed {
        address: String,
        command: &'static str,
        why: String,
    },
}

fn rc_name(code: u32) -> &'static str {
    match code {
        RC_INITIALIZE => " (TPM_RC_INITIALIZE: the TPM was not started)",
        0x101 => " (TPM_RC_FAILURE: the TPM is in failure mode)",
        0x9A2 => " (TPM_RC_BAD_AUTH)",
        0x98E => " (TPM_RC_AUTH_FAIL)",
        0x184 => " (TPM_RC_VALUE: no such PCR?)",
        0x18B => " (TPM_RC_HANDLE: no such PCR)",
        0x907 => " (TPM_RC_LOCALITY: the PCR cannot be extended from this locality)",
        _ => "",
    }
}

/// The TPM's clock counters: a pair that changes whenever PCRs are reset
/// (TPM Reset: `reset_count` goes up; TPM Restart: `restart_count` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Epoch {
    pub reset_count: u32,
    pub restart_count: u32,
}

enum Channel {
    /// A character device: one write per command, one read per answer.
    Device(std::fs::File),
    Stream(Box<dyn ReadWrite>),
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// An open TPM.
pub struct Tpm {
    address: String,
    channel: Channel,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm")
            .field("address", &self.address)
            .finish()
    }
}

impl Tpm {
    /// Opens the TPM at `address` (`None` for [`Address::None`]).
    pub fn open(address: &Address) -> Result<Option<Tpm>, TpmError> {
        let name = address.to_string();
        let open_err = |source| TpmError::Open {
            address: name.clone(),
            source,
        };
        let channel = match address {
            Address::None => return Ok(None),
            Address::Device(path) => Channel::Device(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(open_err)?,
            ),
            Address::Tcp(host, port) => {
                use std::net::ToSocketAddrs;
                let addrs: Vec<_> = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(open_err)?
                    .collect();
                let mut last = None;
                let mut stream = None;
                for a in addrs {
                    match std::net::TcpStream::connect_timeout(&a, SOCKET_TIMEOUT) {
                        Ok(s) => {
                            stream = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let s = stream.ok_or_else(|| {
                    open_err(last.unwrap_or_else(|| std::io::ErrorKind::NotFound.into()))
                })?;
                let _ = s.set_nodelay(true);
                s.set_read_timeout(Some(SOCKET_TIMEOUT)).map_err(open_err)?;
                s.set_write_timeout(Some(SOCKET_TIMEOUT))
                    .map_err(open_err)?;
                Channel::Stream(Box::new(s))
            }
            Address::Unix(path) => {
                let s = UnixStream::connect(path).map_err(open_err)?;
                s.set_read_timeout(Some(SOCKET_TIMEOUT)).map_err(open_err)?;
                s.set_write_timeout(Some(SOCKET_TIMEOUT))
                    .map_err(open_err)?;
                Channel::Stream(Box::new(s))
            }
        };
        Ok(Some(Tpm {
            address: name,
            channel,
        }))
    }

    /// The address it was opened at.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn io(&self, source: std::io::Error) -> TpmError {
        TpmError::Io {
            address: self.address.clone(),
            source,
        }
    }

    /// Sends `cmd`, returns the whole answer (header included).
    fn transact(&mut self, cmd: &[u8]) -> Result<Vec<u8>, TpmError> {
        let mut buf = vec![0u8; MAX_RESPONSE];
        let n = match &mut self.channel {
            Channel::Device(f) => {
                let wrote = f.write(cmd);
                match wrote {
                    Ok(n) if n == cmd.len() => {}
                    Ok(_) => return Err(self.io(std::io::ErrorKind::WriteZero.into())),
                    Err(e) => return Err(self.io(e)),
                }
                match f.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) => return Err(self.io(e)),
                }
            }
            Channel::Stream(s) => {
                let r = s.write_all(cmd).and_then(|()| {
                    s.read_exact(&mut buf[..10])?;
                    let size = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
                    if !(10..=MAX_RESPONSE).contains(&size) {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("an answer of {size} bytes"),
                        ));
                    }
                    s.read_exact(&mut buf[10..size])?;
                    Ok(size)
                });
                match r {
                    Ok(n) => n,
                    Err(e) => return Err(self.io(e)),
                }
            }
        };
        buf.truncate(n);
        Ok(buf)
    }

    /// Runs `cmd`; on `TPM_RC_INITIALIZE` starts the TPM (TPM2_Startup
    /// CLEAR) and runs it again; retries the "try again" warnings.
    /// Returns the answer's parameters (after the 10-byte header).
    fn command(&mut self, name: &'static str, cmd: &[u8]) -> Result<Vec<u8>, TpmError> {
        let mut started = false;
        let mut tries = 0;
        loop {
            let answer = self.transact(cmd)?;
            let code = response_code(&answer).map_err(|why| TpmError::Malformed {
                address: self.address.clone(),
                command: name,
                why,
            })?;
            match code {
                RC_SUCCESS => return Ok(answer[10..].to_vec()),
                RC_INITIALIZE if !started => {
                    started = true;
                    let a = self.transact(&startup_command())?;
                    match response_code(&a) {
                        // Already started (another client raced us): fine.
                        Ok(RC_SUCCESS | RC_INITIALIZE) => {}
                        Ok(code) => {
                            return Err(TpmError::Command {
                                address: self.address.clone(),
                                command: "TPM2_Startup",
                                code,
                            })
                        }
                        Err(why) => {
                            return Err(TpmError::Malformed {
                                address: self.address.clone(),
                                command: "TPM2_Startup",
                                why,
                            })
                        }
                    }
                }
                c if RC_RETRY.contains(&c) && tries < 20 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                code => {
                    return Err(TpmError::Command {
                        address: self.address.clone(),
                        command: name,
                        code,
                    })
                }
            }
        }
    }

    /// TPM2_PCR_Extend of PCR `pcr`'s SHA-256 bank with `digest`.
    pub fn extend(&mut self, pcr: u32, digest: &[u8; 32]) -> Result<(), TpmError> {
        self.command("TPM2_PCR_Extend", &extend_command(pcr, digest))
            .map(drop)
    }

    /// TPM2_PCR_Read of PCR `pcr`'s SHA-256 bank.
    pub fn read_pcr(&mut self, pcr: u32) -> Result<[u8; 32], TpmError> {
        let params = self.command("TPM2_PCR_Read", &pcr_read_command(pcr))?;
        parse_pcr_read(&params, pcr).map_err(|why| TpmError::Malformed {
            address: self.address.clone(),
            command: "TPM2_PCR_Read",
            why,
        })
    }

    /// TPM2_ReadClock's reset and restart counts.
    pub fn epoch(&mut self) -> Result<Epoch, TpmError> {
        let params = self.command("TPM2_ReadClock", &read_clock_command())?;
        parse_read_clock(&params).map_err(|why| TpmError::Malformed {
            address: self.address.clone(),
            command: "TPM2_ReadClock",
            why,
        })
    }
}

fn header(tag: u16, size: usize, code: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    v.extend_from_slice(&tag.to_be_bytes());
    v.extend_from_slice(&(size as u32).to_be_bytes());
    v.extend_from_slice(&code.to_be_bytes());
    v
}

/// TPM2_Startup(TPM_SU_CLEAR).
pub fn startup_command() -> Vec<u8> {
    let mut v = header(ST_NO_SESSIONS, 12, CC_STARTUP);
    v.extend_from_slice(&SU_CLEAR.to_be_bytes());
    v
}

/// TPM2_PCR_Extend: the PCR's handle (its index), one password session
/// with an empty password, a TPML_DIGEST_VALUES of one SHA-256 digest.
pub fn extend_command(pcr: u32, digest: &[u8; 32]) -> Vec<u8> {
    const AUTH: usize = 4 + 2 + 1 + 2;
    let size = 10 + 4 + 4 + AUTH + 4 + 2 + 32;
    let mut v = header(ST_SESSIONS, size, CC_PCR_EXTEND);
    v.extend_from_slice(&pcr.to_be_bytes());
    v.extend_from_slice(&(AUTH as u32).to_be_bytes());
    v.extend_from_slice(&RS_PW.to_be_bytes());
    v.extend_from_slice(&0u16.to_be_bytes()); // nonce: empty
    v.push(0); // session attributes
    v.extend_from_slice(&0u16.to_be_bytes()); // password: empty
    v.extend_from_slice(&1u32.to_be_bytes()); // one digest
    v.extend_from_slice(&ALG_SHA256.to_be_bytes());
    v.extend_from_slice(digest);
    debug_assert_eq!(v.len(), size);
    v
}

/// The 3-byte PCR bitmap selecting `pcr`.
fn select(pcr: u32) -> [u8; 3] {
    let mut bits = [0u8; 3];
    bits[(pcr / 8) as usize] = 1 << (pcr % 8);
    bits
}

/// TPM2_PCR_Read of one SHA-256 PCR.
pub fn pcr_read_command(pcr: u32) -> Vec<u8> {
    let size = 10 + 4 + 2 + 1 + 3;
    let mut v = header(ST_NO_SESSIONS, size, CC_PCR_READ);
    v.extend_from_slice(&1u32.to_be_bytes());
    v.extend_from_slice(&ALG_SHA256.to_be_bytes());
    v.push(3);
    v.extend_from_slice(&select(pcr));
    v
}

/// TPM2_ReadClock.
pub fn read_clock_command() -> Vec<u8> {
    header(ST_NO_SESSIONS, 10, CC_READ_CLOCK)
}

/// The response code of an answer whose size field matches its length.
pub fn response_code(answer: &[u8]) -> Result<u32, String> {
    if answer.len() < 10 {
        return Err(format!("{} bytes, shorter than a header", answer.len()));
    }
    let size = u32::from_be_bytes([answer[2], answer[3], answer[4], answer[5]]) as usize;
    if size != answer.len() {
        return Err(format!(
            "the header says {size} bytes, {} came",
            answer.len()
        ));
    }
    Ok(u32::from_be_bytes([
        answer[6], answer[7], answer[8], answer[9],
    ]))
}

/// A reader over an answer's parameters that fails instead of panicking.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("the answer ends early".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

/// PCR_Read's parameters: `pcrUpdateCounter`, the selection the TPM
/// read (it leaves out a bank it does not have), the digests.
pub fn parse_pcr_read(params: &[u8], pcr: u32) -> Result<[u8; 32], String> {
    let mut c = Cursor(params);
    let _update_counter = c.u32()?;
    let banks = c.u32()?;
    let mut selected = false;
    for _ in 0..banks.min(16) {
        let alg = c.u16()?;
        let n = c.u8()? as usize;
        let bits = c.take(n)?;
        let want = select(pcr);
        if alg == ALG_SHA256 && bits.len() >= 3 && bits[..3] == want {
            selected = true;
        }
    }
    let count = c.u32()?;
    if !selected || count != 1 {
        return Err(format!(
            "PCR {pcr} of the SHA-256 bank was not read (the TPM has no such bank allocated?)"
        ));
    }
    let len = c.u16()? as usize;
    let d = c.take(len)?;
    <[u8; 32]>::try_from(d).map_err(|_| format!("a SHA-256 digest of {len} bytes"))
}

/// ReadClock's TPMS_TIME_INFO: time, then clock, resetCount, restartCount, safe.
pub fn parse_read_clock(params: &[u8]) -> Result<Epoch, String> {
    let mut c = Cursor(params);
    let _time = c.u64()?;
    let _clock = c.u64()?;
    let reset_count = c.u32()?;
    let restart_count = c.u32()?;
    let _safe = c.u8()?;
    Ok(Epoch {
        reset_count,
        restart_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            Address::parse("device:/dev/tpmrm0").unwrap(),
            Address::Device("/dev/tpmrm0".into())
        );
        assert_eq!(
            Address::parse("swtpm:host=127.0.0.1,port=2321").unwrap(),
            Address::Tcp("127.0.0.1".into(), 2321)
        );
        assert_eq!(
            Address::parse("swtpm:port=2321").unwrap(),
            Address::Tcp("localhost".into(), 2321)
        );
        assert_eq!(
            Address::parse("swtpm:localhost:2321").unwrap(),
            Address::Tcp("localhost".into(), 2321)
        );
        assert_eq!(
            Address::parse("swtpm:[::1]:2321").unwrap(),
            Address::Tcp("::1".into(), 2321)
        );
        assert_eq!(
            Address::parse("swtpm:path=/run/swtpm.sock").unwrap(),
            Address::Unix("/run/swtpm.sock".into())
        );
        assert_eq!(Address::parse("none").unwrap(), Address::None);
        for bad in [
            "",
            "mssim:port=2321",
            "device:tpm0",
            "swtpm:",
            "swtpm:host=x",
            "swtpm:port=0",
            "swtpm:host:99999",
            "swtpm:path=rel",
            "swtpm:port=1,path=/x",
            "swtpm:colour=blue",
        ] {
            let e = Address::parse(bad).unwrap_err();
            assert!(e.starts_with("TPM address"), "{bad}: {e}");
        }
        for s in [
            "device:/dev/tpmrm0",
            "swtpm:host=h,port=1",
            "swtpm:path=/p",
            "none",
        ] {
            assert_eq!(Address::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn commands_are_laid_out_as_part_3_says() {
        assert_eq!(
            startup_command(),
            [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0]
        );
        assert_eq!(
            read_clock_command(),
            [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x81]
        );
        assert_eq!(
            pcr_read_command(15),
            [0x80, 0x01, 0, 0, 0, 20, 0, 0, 0x01, 0x7E, 0, 0, 0, 1, 0, 0x0B, 3, 0, 0x80, 0]
        );
        assert_eq!(select(0), [1, 0, 0]);
        assert_eq!(select(23), [0, 0, 0x80]);
        let d = [0xAB; 32];
        let c = extend_command(15, &d);
        let mut want = vec![0x80, 0x02, 0, 0, 0, 65, 0, 0, 0x01, 0x82];
        want.extend_from_slice(&[0, 0, 0, 15]); // pcrHandle
        want.extend_from_slice(&[0, 0, 0, 9]); // authorizationSize
        want.extend_from_slice(&[0x40, 0, 0, 9, 0, 0, 0, 0, 0]); // TPM_RS_PW, nonce, attrs, hmac
        want.extend_from_slice(&[0, 0, 0, 1, 0, 0x0B]);
        want.extend_from_slice(&d);
        assert_eq!(c, want);
    }

    #[test]
    fn answers_are_checked() {
        assert_eq!(
            response_code(&[0x80, 1, 0, 0, 0, 10, 0, 0, 1, 0]),
            Ok(0x100)
        );
        assert!(response_code(&[0x80, 1, 0, 0, 0, 11, 0, 0, 0, 0]).is_err());
        assert!(response_code(&[0x80, 1]).is_err());
        // PCR_Read of PCR 15: counter, one sha256 selection, one digest.
        let mut p = vec![
            0, 0, 0, 7, 0, 0, 0, 1, 0, 0x0B, 3, 0, 0x80, 0, 0, 0, 0, 1, 0, 32,
        ];
        p.extend_from_slice(&[0x5A; 32]);
        assert_eq!(parse_pcr_read(&p, 15), Ok([0x5A; 32]));
        assert!(parse_pcr_read(&p, 16).is_err(), "another PCR was read");
        assert!(parse_pcr_read(&p[..p.len() - 1], 15).is_err());
        // No SHA-256 bank: an empty selection, no digest.
        assert!(parse_pcr_read(&[0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0], 15)
            .unwrap_err()
            .contains("no such bank"));
        let mut t = vec![0u8; 16];
        t.extend_from_slice(&[0, 0, 0, 3, 0, 0, 0, 1, 1]);
        assert_eq!(
            parse_read_clock(&t),
            Ok(Epoch {
                reset_count: 3,
                restart_count: 1
            })
        );
        assert!(parse_read_clock(&t[..20]).is_err());
    }
}
