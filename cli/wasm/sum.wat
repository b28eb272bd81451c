;; Sums every unsigned integer that appears in the input text (stdin) and writes {"sum":N}.
;; WASI preview1 command: reads stdin with fd_read, writes stdout with fd_write.
;; Reads at most 60000 bytes of input.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{\"sum\":")
  (data (i32.const 110) "}")
  ;; Writes the n iovecs at $iovs to stdout, looping on short writes as wasi-libc does: a
  ;; runtime may write fewer bytes than asked (one iovec at a time, say). Stops on an error or a
  ;; write of 0 bytes. The count written goes to 40; the iovecs are updated in place.
  (func $write_all (param $iovs i32) (param $n i32)
    (local $w i32) (local $len i32)
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $n)))
        (br_if $done (call $fd_write (i32.const 1) (local.get $iovs) (local.get $n) (i32.const 40)))
        (local.set $w (i32.load (i32.const 40)))
        (br_if $done (i32.eqz (local.get $w)))
        ;; Skip the iovecs written whole.
        (block $partial
          (loop $skip
            (br_if $partial (i32.eqz (local.get $n)))
            (local.set $len (i32.load offset=4 (local.get $iovs)))
            (br_if $partial (i32.lt_u (local.get $w) (local.get $len)))
            (local.set $w (i32.sub (local.get $w) (local.get $len)))
            (local.set $iovs (i32.add (local.get $iovs) (i32.const 8)))
            (local.set $n (i32.sub (local.get $n) (i32.const 1)))
            (br $skip)))
        ;; Move into the one written in part.
        (if (local.get $n)
          (then
            (i32.store (local.get $iovs) (i32.add (i32.load (local.get $iovs)) (local.get $w)))
            (i32.store offset=4 (local.get $iovs)
              (i32.sub (i32.load offset=4 (local.get $iovs)) (local.get $w)))))
        (br $again))))
  (func (export "_start")
    (local $n i32) (local $i i32) (local $c i32) (local $len i32) (local $in i32) (local $p i32)
    (local $sum i64) (local $cur i64)
    ;; Read all of stdin into 1024.. (iovec at 0, nread at 8).
    (block $done
      (loop $read
        (i32.store (i32.const 0) (i32.add (i32.const 1024) (local.get $len)))
        (i32.store (i32.const 4) (i32.sub (i32.const 60000) (local.get $len)))
        (br_if $done (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $len (i32.add (local.get $len) (local.get $n)))
        (br $read)))
    ;; Scan for digit runs.
    (block $end
      (loop $scan
        (br_if $end (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $c (i32.load8_u (i32.add (i32.const 1024) (local.get $i))))
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 48)) (i32.le_u (local.get $c) (i32.const 57)))
          (then
            (local.set $cur (i64.add (i64.mul (local.get $cur) (i64.const 10))
                                     (i64.extend_i32_u (i32.sub (local.get $c) (i32.const 48)))))
            (local.set $in (i32.const 1)))
          (else
            (if (local.get $in)
              (then
                (local.set $sum (i64.add (local.get $sum) (local.get $cur)))
                (local.set $cur (i64.const 0))
                (local.set $in (i32.const 0))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (local.set $sum (i64.add (local.get $sum) (local.get $cur)))
    ;; Decimal digits, written backwards ending at 320.
    (local.set $p (i32.const 320))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $sum) (i64.const 10)))))
      (local.set $sum (i64.div_u (local.get $sum) (i64.const 10)))
      (br_if $digits (i64.ne (local.get $sum) (i64.const 0))))
    ;; Three iovecs at 16: prefix, digits, suffix.
    (i32.store (i32.const 16) (i32.const 100))
    (i32.store (i32.const 20) (i32.const 7))
    (i32.store (i32.const 24) (local.get $p))
    (i32.store (i32.const 28) (i32.sub (i32.const 320) (local.get $p)))
    (i32.store (i32.const 32) (i32.const 110))
    (i32.store (i32.const 36) (i32.const 1))
    (call $write_all (i32.const 16) (i32.const 3))))
