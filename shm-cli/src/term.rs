//! The terminal: whether a stream is one, a progress line that only a terminal sees
//! (indicatif), the live view's screen and keys (crossterm), and a Ctrl-C / SIGTERM flag
//! (signal-hook) for the commands that run until stopped.

use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, queue, terminal};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether stderr is a terminal (progress is drawn only then).
pub fn stderr_is_tty() -> bool {
    io::stderr().is_terminal()
}

/// Whether stdin and stdout are both a terminal (the live view needs both).
pub fn interactive() -> bool {
    io::stdin().is_terminal() && io::stdout().is_terminal()
}

fn stop_flag() -> &'static Arc<AtomicBool> {
    static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    STOP.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// The read end of a socket pair whose other end the signal handler writes a byte to, so
/// that [`sleep`] wakes at a signal without polling the flag.
fn stop_wake() -> &'static OnceLock<UnixStream> {
    static WAKE: OnceLock<UnixStream> = OnceLock::new();
    &WAKE
}

/// Makes SIGINT and SIGTERM set the flag [`stopped`] reads instead of killing the process,
/// so that a recorder finishes its file and a live view restores the terminal, and wake a
/// [`sleep`] at once.
pub fn catch_stop() {
    let wake = UnixStream::pair().ok().and_then(|(read, write)| {
        // The write end lives for the process: the handler may write to it at any time.
        let fd = write.into_raw_fd();
        stop_wake().set(read).ok().map(|()| fd)
    });
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A failure leaves the default action (the process ends), which is what a
        // command without the flag would do anyway.
        let _ = signal_hook::flag::register(sig, Arc::clone(stop_flag()));
        if let Some(fd) = wake {
            // Without it, `sleep` still sees the flag within a slice.
            let _ = signal_hook::low_level::pipe::register_raw(sig, fd);
        }
    }
}

/// Whether SIGINT or SIGTERM came since [`catch_stop`].
pub fn stopped() -> bool {
    // Acquire: pairs with the SeqCst store of signal-hook's flag handler, which runs before
    // its socket handler writes the byte that ends a `sleep`: a sleep woken by the byte
    // sees the flag. Nothing else is published through it.
    stop_flag().load(Ordering::Acquire)
}

/// Sleeps for `d`, or until SIGINT / SIGTERM (after [`catch_stop`]); returns whether the
/// whole time passed. It waits on the handler's socket, so a signal ends it at once and a
/// watcher sleeping between looks wakes for nothing else (`top` watching a ring costs the
/// ring's cores one wake-up per look). Where that socket could not be made, it sleeps in
/// slices of at most 50 ms, looking at the flag between them. A `d` past what the clock
/// can represent (a replay's time far in the future) waits until a signal.
pub fn sleep(d: Duration) -> bool {
    const SLICE: Duration = Duration::from_millis(50);
    const LONGEST: Duration = Duration::from_secs(3600);
    let deadline = Instant::now().checked_add(d);
    loop {
        if stopped() {
            return false;
        }
        let left = match deadline {
            Some(t) => t.saturating_duration_since(Instant::now()),
            None => LONGEST,
        };
        if left.is_zero() {
            return true;
        }
        match stop_wake().get() {
            Some(mut wake) => {
                // A byte (the handler's), a timeout or EINTR: the loop looks again.
                let _ = wake.set_read_timeout(Some(left.min(LONGEST)));
                let _ = wake.read(&mut [0u8; 1]);
            }
            None => std::thread::sleep(left.min(SLICE)),
        }
    }
}

/// Writes to stdout (what `say!` calls). A reader that went away (`shmring ls | head`)
/// ends the command quietly with status 0, as for any Unix filter, instead of a panic;
/// any other failure to write ends it with status 1 and says why on stderr.
pub fn out(args: std::fmt::Arguments<'_>) {
    if let Err(e) = io::stdout().lock().write_fmt(args) {
        if e.kind() != io::ErrorKind::BrokenPipe {
            let _ = writeln!(io::stderr(), "shmring: cannot write to stdout: {e}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
}

/// A one-line progress report on stderr, redrawn at most 4 times a second, only when
/// stderr is a terminal: piped or redirected, it says nothing.
pub struct Progress {
    bar: ProgressBar,
    last: Option<Instant>,
}

impl Progress {
    /// A spinner with a message and the time elapsed.
    pub fn new() -> Progress {
        Progress::with(None, "{spinner} {msg} ({elapsed})")
    }

    /// A bar of `len` steps: `[3/38] message (12s)`.
    pub fn steps(len: u64) -> Progress {
        Progress::with(Some(len), "[{pos}/{len}] {wide_msg} ({elapsed})")
    }

    fn with(len: Option<u64>, template: &str) -> Progress {
        let target = if stderr_is_tty() {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(len, target);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        Progress { bar, last: None }
    }

    /// Sets the message to `text()` if a quarter second has passed (the text is only built
    /// then, so a hot loop pays one clock read).
    pub fn tick(&mut self, text: impl FnOnce() -> String) {
        if self.bar.is_hidden() {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_millis(250))
        {
            return;
        }
        self.last = Some(now);
        self.bar.set_message(text());
    }

    /// Sets the message now.
    pub fn say(&self, text: String) {
        self.bar.set_message(text);
    }

    /// One step done.
    pub fn step(&self) {
        self.bar.inc(1);
    }

    /// A line printed above the progress line (nothing when hidden).
    pub fn println(&self, line: String) {
        self.bar.println(line);
    }

    /// Clears the line (before other output, or at the end).
    pub fn clear(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// `12.3 MiB`, `4.0 KiB`, `17 B`.
pub fn bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// The terminal in raw mode with the alternate screen and a hidden cursor, for a live
/// view; dropping it restores everything.
pub struct Screen(());

/// What the user asked for while [`Screen::wait`] waited.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Nothing (the time ran out).
    None,
    /// Redraw now (the terminal was resized).
    Redraw,
    /// `q`, Esc or Ctrl-C.
    Quit,
}

impl Screen {
    /// Enters the live view on stdout.
    ///
    /// # Errors
    ///
    /// If the terminal cannot be put in raw mode.
    pub fn enter() -> io::Result<Screen> {
        terminal::enable_raw_mode()?;
        let screen = Screen(());
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(screen)
    }

    /// Waits up to `timeout` for a key or a resize.
    pub fn wait(&self, timeout: Duration) -> Input {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match event::poll(left) {
                Ok(true) => {}
                Ok(false) => return Input::None,
                // Input is gone (the terminal closed): nothing more can come.
                Err(_) => return Input::Quit,
            }
            match event::read() {
                Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => {
                    let ctrl_c = k.modifiers.contains(KeyModifiers::CONTROL)
                        && matches!(k.code, KeyCode::Char('c'));
                    if ctrl_c || matches!(k.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc) {
                        return Input::Quit;
                    }
                }
                Ok(Event::Resize(..)) => return Input::Redraw,
                Ok(_) => {}
                Err(_) => return Input::Quit,
            }
            if left.is_zero() {
                return Input::None;
            }
        }
    }

    /// The terminal's width in columns.
    pub fn width(&self) -> usize {
        usize::from(terminal::size().map_or(80, |(c, _)| c))
    }

    /// Replaces the screen's contents with `frame`: lines cut to the terminal's height, and
    /// to its width at a space, so that a column that does not fit is left out whole
    /// rather than shown as a shorter number.
    pub fn draw(&self, frame: &str) {
        let (cols, rows) = terminal::size().unwrap_or((80, 24));
        let mut out = io::stdout().lock();
        let _ = queue!(
            out,
            cursor::MoveTo(0, 0),
            terminal::Clear(terminal::ClearType::All)
        );
        for (i, line) in frame.lines().take(usize::from(rows)).enumerate() {
            let _ = queue!(out, cursor::MoveTo(0, i as u16));
            let line = cut_at_space(line, usize::from(cols));
            let _ = out.write_all(line.as_bytes());
        }
        let _ = out.flush();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// `line` cut to at most `cols` characters; where that would split a word (a number, a
/// heading), cut before that word instead.
fn cut_at_space(line: &str, cols: usize) -> &str {
    let Some((at, _)) = line.char_indices().nth(cols) else {
        return line;
    };
    let (kept, rest) = line.split_at(at);
    if rest.starts_with(' ') || kept.ends_with(' ') {
        return kept;
    }
    kept.rfind(' ').map_or(kept, |sp| kept[..sp].trim_end())
}

#[cfg(test)]
mod tests {
    use super::cut_at_space;

    #[test]
    fn a_line_is_cut_before_a_word_that_does_not_fit() {
        assert_eq!(cut_at_space("ab   191.23M   7", 20), "ab   191.23M   7");
        assert_eq!(cut_at_space("ab   191.23M   7", 8), "ab");
        assert_eq!(cut_at_space("ab   191.23M   7", 12), "ab   191.23M");
        assert_eq!(cut_at_space("ab   191.23M   7", 13), "ab   191.23M ");
        assert_eq!(cut_at_space("abcdef", 3), "abc");
        assert_eq!(cut_at_space("", 3), "");
    }
}
