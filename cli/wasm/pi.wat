;; Monte Carlo π kernel for sharded `computation` tasks.
;; stdin: {"end":E,"shard":K,"start":S} (the coordinator's range shard; keys in this order).
;; For every sample index i in [S, E): h = splitmix64(i), x = h >> 32, y = h & 0xffffffff,
;; and the point is inside the quarter circle when x² + y² < 2^64 (exact in u64: x² ≤ ~y²).
;; Each sample depends only on its index, so the total over [0, N) is the same however the
;; range is split. stdout: {"hits":H,"samples":N}.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "{\"hits\":")
  (data (i32.const 110) ",\"samples\":")
  (data (i32.const 125) "}")
  ;; Writes the n iovecs at $iovs to stdout, looping on short writes as wasi-libc does: a
  ;; runtime may write fewer bytes than asked (one iovec at a time, say). Stops on an error or a
  ;; write of 0 bytes. The count written goes to 60; the iovecs are updated in place.
  (func $write_all (param $iovs i32) (param $n i32)
    (local $w i32) (local $len i32)
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $n)))
        (br_if $done (call $fd_write (i32.const 1) (local.get $iovs) (local.get $n) (i32.const 60)))
        (local.set $w (i32.load (i32.const 60)))
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
  ;; Writes v in decimal ending just before $end; returns the start.
  (func $digits (param $v i64) (param $end i32) (result i32)
    (loop $d
      (local.set $end (i32.sub (local.get $end) (i32.const 1)))
      (i32.store8 (local.get $end)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10)))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $d (i64.ne (local.get $v) (i64.const 0))))
    (local.get $end))
  (func (export "_start")
    (local $n i32) (local $len i32) (local $i i32) (local $c i32) (local $k i32) (local $in i32)
    (local $cur i64) (local $end i64) (local $start i64) (local $s i64) (local $z i64)
    (local $x i64) (local $y i64) (local $hits i64) (local $p i32) (local $q i32)
    ;; Read stdin into 1024..
    (block $done
      (loop $read
        (i32.store (i32.const 0) (i32.add (i32.const 1024) (local.get $len)))
        (i32.store (i32.const 4) (i32.sub (i32.const 4096) (local.get $len)))
        (br_if $done (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $len (i32.add (local.get $len) (local.get $n)))
        (br $read)))
    ;; The first integer is end, the second shard, the third start.
    (block $parsed
      (loop $scan
        (br_if $parsed (i32.gt_u (local.get $i) (local.get $len)))
        (local.set $c (if (result i32) (i32.lt_u (local.get $i) (local.get $len))
          (then (i32.load8_u (i32.add (i32.const 1024) (local.get $i))))
          (else (i32.const 32))))
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 48)) (i32.le_u (local.get $c) (i32.const 57)))
          (then
            (local.set $cur (i64.add (i64.mul (local.get $cur) (i64.const 10))
                                     (i64.extend_i32_u (i32.sub (local.get $c) (i32.const 48)))))
            (local.set $in (i32.const 1)))
          (else
            (if (local.get $in)
              (then
                (if (i32.eqz (local.get $k)) (then (local.set $end (local.get $cur))))
                (if (i32.eq (local.get $k) (i32.const 2)) (then (local.set $start (local.get $cur))))
                (local.set $k (i32.add (local.get $k) (i32.const 1)))
                (local.set $cur (i64.const 0))
                (local.set $in (i32.const 0))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    ;; Sample.
    (local.set $s (local.get $start))
    (block $out
      (loop $sample
        (br_if $out (i64.ge_u (local.get $s) (local.get $end)))
        (local.set $z (i64.mul (i64.add (local.get $s) (i64.const 1)) (i64.const 0x9E3779B97F4A7C15)))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 30)))
                               (i64.const 0xBF58476D1CE4E5B9)))
        (local.set $z (i64.mul (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 27)))
                               (i64.const 0x94D049BB133111EB)))
        (local.set $z (i64.xor (local.get $z) (i64.shr_u (local.get $z) (i64.const 31))))
        (local.set $x (i64.shr_u (local.get $z) (i64.const 32)))
        (local.set $y (i64.and (local.get $z) (i64.const 0xffffffff)))
        (local.set $hits (i64.add (local.get $hits)
          (i64.extend_i32_u (i64.le_u (i64.mul (local.get $x) (local.get $x))
                                      (i64.xor (i64.mul (local.get $y) (local.get $y)) (i64.const -1))))))
        (local.set $s (i64.add (local.get $s) (i64.const 1)))
        (br $sample)))
    ;; {"hits":H,"samples":N}
    (local.set $p (call $digits (local.get $hits) (i32.const 400)))
    (local.set $q (call $digits (i64.sub (local.get $end) (local.get $start)) (i32.const 500)))
    (i32.store (i32.const 16) (i32.const 100)) (i32.store (i32.const 20) (i32.const 8))
    (i32.store (i32.const 24) (local.get $p)) (i32.store (i32.const 28) (i32.sub (i32.const 400) (local.get $p)))
    (i32.store (i32.const 32) (i32.const 110)) (i32.store (i32.const 36) (i32.const 11))
    (i32.store (i32.const 40) (local.get $q)) (i32.store (i32.const 44) (i32.sub (i32.const 500) (local.get $q)))
    (i32.store (i32.const 48) (i32.const 125)) (i32.store (i32.const 52) (i32.const 1))
    (call $write_all (i32.const 16) (i32.const 5))))
