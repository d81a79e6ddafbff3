//! A local pseudo-terminal for a child process: the SSH engine runs `ssh -tt` on one, so that
//! resizing it sends the remote shell a window change, as a terminal emulator would.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{Winsize, tcsetwinsize};

/// The controlling side of a pseudo-terminal.
pub struct Pty {
    master: OwnedFd,
}

fn window(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Pty {
    /// Starts `program` with `args` in a new session whose controlling terminal is a new
    /// pseudo-terminal of `rows`×`cols` (through util-linux's `setsid --ctty`), which is also
    /// its stdin, stdout and stderr.
    pub fn spawn(
        program: &str,
        args: &[String],
        rows: u16,
        cols: u16,
    ) -> io::Result<(Pty, tokio::process::Child)> {
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let name = ptsname(&master, Vec::new())?;
        let slave_path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(name.as_bytes()));
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
            .open(slave_path)?;
        let pty = Pty { master };
        pty.resize(rows, cols)?;
        let mut command = tokio::process::Command::new("setsid");
        command
            .arg("--ctty")
            .arg(program)
            .args(args)
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave))
            .kill_on_drop(true);
        // The parent's copies of the terminal side close with `command`, so that reads of
        // the master end once the child is gone.
        let child = command.spawn()?;
        drop(command);
        Ok((pty, child))
    }

    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        Ok(tcsetwinsize(&self.master, window(rows, cols))?)
    }

    /// A reader and a writer of the terminal's other side.
    pub fn files(&self) -> io::Result<(tokio::fs::File, tokio::fs::File)> {
        let reader = std::fs::File::from(self.master.try_clone()?);
        let writer = std::fs::File::from(self.master.try_clone()?);
        Ok((
            tokio::fs::File::from_std(reader),
            tokio::fs::File::from_std(writer),
        ))
    }
}
