;; A deliberately long computation: sums i for i in 0..N (N = 300000000, about 1.2 G fuel) and
;; prints {"sum":S}. Used where a test needs a task that is still running a second later.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{\"sum\":")
  (data (i32.const 110) "}")
  (func (export "_start")
    (local $i i64) (local $sum i64) (local $p i32)
    (loop $add
      (local.set $sum (i64.add (local.get $sum) (local.get $i)))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br_if $add (i64.lt_u (local.get $i) (i64.const 300000000))))
    (local.set $p (i32.const 320))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $sum) (i64.const 10)))))
      (local.set $sum (i64.div_u (local.get $sum) (i64.const 10)))
      (br_if $digits (i64.ne (local.get $sum) (i64.const 0))))
    (i32.store (i32.const 16) (i32.const 100))
    (i32.store (i32.const 20) (i32.const 7))
    (i32.store (i32.const 24) (local.get $p))
    (i32.store (i32.const 28) (i32.sub (i32.const 320) (local.get $p)))
    (i32.store (i32.const 32) (i32.const 110))
    (i32.store (i32.const 36) (i32.const 1))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 3) (i32.const 40)))))
