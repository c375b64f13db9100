//! The probe guest's machine code, assembled by a tiny x86-64 encoder so each instruction
//! is readable here. Layout constants live in `layout.rs`.

use super::layout::*;

/// A growing buffer of x86-64 machine code placed at a known guest address.
pub(crate) struct Code {
    base: u64,
    bytes: Vec<u8>,
}

impl Code {
    pub(crate) fn new(base: u64) -> Self {
        Self {
            base,
            bytes: Vec::new(),
        }
    }
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// Guest address of the next instruction.
    pub(crate) fn here(&self) -> u64 {
        self.base + self.bytes.len() as u64
    }
    fn emit(&mut self, b: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(b);
        self
    }
    /// `out imm8, al`
    pub(crate) fn out(&mut self, port: u8) -> &mut Self {
        self.emit(&[0xe6, port])
    }
    /// `mov ecx, imm32`
    pub(crate) fn mov_ecx(&mut self, v: u32) -> &mut Self {
        self.emit(&[0xb9]).emit(&v.to_le_bytes())
    }
    /// `mov eax, imm32`
    pub(crate) fn mov_eax(&mut self, v: u32) -> &mut Self {
        self.emit(&[0xb8]).emit(&v.to_le_bytes())
    }
    /// `1: dec ecx; jnz 1b` — the timed loop, two instructions per iteration.
    pub(crate) fn count_down_ecx(&mut self) -> &mut Self {
        self.emit(&[0xff, 0xc9, 0x75, 0xfc])
    }
    /// `push imm32` (sign-extended to 64 bits; all our values are below 2^31).
    pub(crate) fn push(&mut self, v: u32) -> &mut Self {
        self.emit(&[0x68]).emit(&v.to_le_bytes())
    }
    /// `push imm8`
    pub(crate) fn push8(&mut self, v: u8) -> &mut Self {
        self.emit(&[0x6a, v])
    }
    /// `pop rax`
    pub(crate) fn pop_rax(&mut self) -> &mut Self {
        self.emit(&[0x58])
    }
    /// `iretq`
    pub(crate) fn iretq(&mut self) -> &mut Self {
        self.emit(&[0x48, 0xcf])
    }
    /// `syscall`
    pub(crate) fn syscall(&mut self) -> &mut Self {
        self.emit(&[0x0f, 0x05])
    }
    /// `mov dword [abs32], imm32`
    pub(crate) fn store_imm(&mut self, addr: u32, v: u32) -> &mut Self {
        self.emit(&[0xc7, 0x04, 0x25])
            .emit(&addr.to_le_bytes())
            .emit(&v.to_le_bytes())
    }
    /// `mov [abs32], rax`
    pub(crate) fn store_rax(&mut self, addr: u32) -> &mut Self {
        self.emit(&[0x48, 0x89, 0x04, 0x25])
            .emit(&addr.to_le_bytes())
    }
    /// `mov [abs32], rcx`
    pub(crate) fn store_rcx(&mut self, addr: u32) -> &mut Self {
        self.emit(&[0x48, 0x89, 0x0c, 0x25])
            .emit(&addr.to_le_bytes())
    }
    /// `mov [abs32], r11`
    pub(crate) fn store_r11(&mut self, addr: u32) -> &mut Self {
        self.emit(&[0x4c, 0x89, 0x1c, 0x25])
            .emit(&addr.to_le_bytes())
    }
    /// `mov eax, cs`
    pub(crate) fn mov_eax_cs(&mut self) -> &mut Self {
        self.emit(&[0x8c, 0xc8])
    }
    /// `mov rax, cr2`
    pub(crate) fn mov_rax_cr2(&mut self) -> &mut Self {
        self.emit(&[0x0f, 0x20, 0xd0])
    }
    /// `jmp rel32` to an absolute guest address.
    pub(crate) fn jmp(&mut self, target: u64) -> &mut Self {
        let next = self.here() + 5;
        let rel = target.wrapping_sub(next) as i64 as i32;
        self.emit(&[0xe9]).emit(&rel.to_le_bytes())
    }
    /// `1: hlt; jmp 1b` — park forever.
    pub(crate) fn park(&mut self) -> &mut Self {
        self.emit(&[0xf4, 0xeb, 0xfd])
    }
}

/// Kernel entry (CPL 0): two timed loops of different lengths (their difference cancels
/// the cost of the exits themselves), then `iretq` to user mode.
pub(crate) fn kernel_entry() -> Code {
    let mut c = Code::new(KERNEL_CODE);
    c.out(PORT_MARK).mov_ecx(KERNEL_SHORT_LOOP).count_down_ecx();
    c.out(PORT_MARK).mov_ecx(KERNEL_LONG_LOOP).count_down_ecx();
    c.out(PORT_MARK);
    // iretq frame: SS, RSP, RFLAGS (interrupts off), CS, RIP.
    c.push(u32::from(USER_DS))
        .push(USER_STACK_TOP as u32)
        .push(0x2);
    c.push(u32::from(USER_CS)).push(USER_CODE as u32);
    c.out(PORT_MARK).iretq();
    c
}

/// User code (CPL 3): a long timed loop, then `syscall`. Returns the code and the address
/// of the instruction after `syscall` (what SYSCALL puts in RCX).
pub(crate) fn user_code() -> (Code, u64) {
    let mut c = Code::new(USER_CODE);
    c.mov_ecx(USER_LOOP).count_down_ecx();
    c.mov_eax(SYSCALL_MAGIC).syscall();
    let ret = c.here();
    c.emit(&[0xeb, 0xfe]); // jmp $ (never reached: the probe ends at the syscall)
    (c, ret)
}

/// The SYSCALL entry (LSTAR): records that it ran, with RCX, R11 and CS, then reports.
pub(crate) fn syscall_entry() -> Code {
    let mut c = Code::new(SYSCALL_ENTRY);
    c.store_rax(MAILBOX_RAX)
        .store_imm(MAILBOX_KIND, KIND_SYSCALL_ENTRY);
    c.store_rcx(MAILBOX_RCX).store_r11(MAILBOX_R11);
    c.mov_eax_cs().store_rax(MAILBOX_CS);
    c.out(PORT_DONE).park();
    c
}

/// Vectors for which the CPU pushes an error code.
fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Exception stubs for vectors 0..32 and the common handler they jump to. Returns the code
/// and each stub's address (for the IDT).
pub(crate) fn exception_handlers() -> (Code, Vec<u64>) {
    let mut c = Code::new(EXCEPTION_CODE);
    // Common handler first; stack: vector, error code, RIP, CS, RFLAGS, RSP, SS.
    let common = c.here();
    c.store_rax(MAILBOX_RAX)
        .store_imm(MAILBOX_KIND, KIND_EXCEPTION);
    c.store_rcx(MAILBOX_RCX).store_r11(MAILBOX_R11);
    c.pop_rax().store_rax(MAILBOX_VECTOR);
    c.pop_rax().store_rax(MAILBOX_ERROR_CODE);
    c.pop_rax().store_rax(MAILBOX_RIP);
    c.pop_rax().store_rax(MAILBOX_CS);
    c.mov_rax_cr2().store_rax(MAILBOX_CR2);
    c.out(PORT_DONE).park();
    let mut stubs = Vec::with_capacity(IDT_VECTORS);
    for vector in 0..IDT_VECTORS as u8 {
        stubs.push(c.here());
        if !has_error_code(vector) {
            c.push8(0);
        }
        c.push8(vector).jmp(common);
    }
    (c, stubs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_code_ends_in_syscall_with_return_address_after_it() {
        let (c, ret) = user_code();
        let b = c.bytes();
        let at = (ret - USER_CODE) as usize;
        assert_eq!(&b[at - 2..at], &[0x0f, 0x05]);
    }

    #[test]
    fn jmp_encodes_relative_displacement() {
        let mut c = Code::new(0x1000);
        c.jmp(0x1000);
        assert_eq!(c.bytes(), &[0xe9, 0xfb, 0xff, 0xff, 0xff]); // -5: back to itself
    }

    #[test]
    fn every_vector_gets_a_stub_that_pushes_two_words() {
        let (c, stubs) = exception_handlers();
        assert_eq!(stubs.len(), IDT_VECTORS);
        let b = c.bytes();
        let off = |v: usize| (stubs[v] - EXCEPTION_CODE) as usize;
        // #PF (14) has a CPU error code: the stub pushes only the vector.
        assert_eq!(&b[off(14)..off(14) + 2], &[0x6a, 14]);
        // #DE (0) has none: the stub pushes a zero first.
        assert_eq!(&b[off(0)..off(0) + 4], &[0x6a, 0, 0x6a, 0]);
        assert!(
            c.here() < EXCEPTION_CODE + 0x1000,
            "handlers fit their page"
        );
    }
}
