;; Grows memory one page at a time for ever: the sandbox's memory cap must stop it.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $grow
      (drop (memory.grow (i32.const 1)))
      (br $grow))))
