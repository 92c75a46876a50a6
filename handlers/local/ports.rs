//! Which process holds a TCP port, for an error that says more than "address in use".
//! Linux only: the listening socket's inode from `/proc/net/tcp{,6}`, then the process
//! whose `/proc/<pid>/fd` links to that socket. Processes of other users are not visible
//! to this one; then nothing is named.

/// Why `address` (`host:port`) could not be listened on: for an address in use, which
/// process holds it when this machine tells.
pub(crate) fn cannot_listen(address: &str, error: &std::io::Error) -> String {
    if error.kind() != std::io::ErrorKind::AddrInUse {
        return format!("cannot listen on {address}: {error}");
    }
    let port = address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok());
    match port.and_then(listener_of) {
        Some((pid, command)) => {
            format!("cannot listen on {address}: the port is taken by process {pid} ({command})")
        }
        None => format!("cannot listen on {address}: the port is taken by another process"),
    }
}

/// The process id and command line of the process listening on TCP `port`.
#[cfg(target_os = "linux")]
pub(crate) fn listener_of(port: u16) -> Option<(u32, String)> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| listening_inodes(&text, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|link| targets.iter().any(|t| link.as_os_str() == t.as_str()))
        });
        if holds {
            let command = std::fs::read(entry.path().join("cmdline"))
                .map(|raw| {
                    String::from_utf8_lossy(&raw)
                        .split('\0')
                        .filter(|part| !part.is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            return Some((pid, command));
        }
    }
    None
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn listener_of(_port: u16) -> Option<(u32, String)> {
    None
}

/// The inodes of sockets listening on `port` in one `/proc/net/tcp` table: each row is
/// `sl local_address rem_address st ...` with the inode tenth; state `0A` is LISTEN and
/// the local address ends in the port in hex.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    let wanted = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?;
            let (_, local_port) = local.rsplit_once(':')?;
            (*state == "0A" && local_port == wanted && *inode != "0").then(|| (*inode).to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 48213 1 0000000000000000 100 0 0 10 0
   1: 0100007F:20FB 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 48999 1 0000000000000000 20 4 30 10 -1
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 51234 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn only_the_listening_socket_on_the_port_is_found() {
        assert_eq!(listening_inodes(TABLE, 8443), ["48213"]);
        assert_eq!(listening_inodes(TABLE, 8080), ["51234"]);
        assert!(listening_inodes(TABLE, 7071).is_empty());
        assert!(listening_inodes("", 8443).is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_holding_a_port_is_this_one_when_it_listens() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();

        let found = listener_of(port);

        assert_eq!(found.map(|(pid, _)| pid), Some(std::process::id()));
    }
}
