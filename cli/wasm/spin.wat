;; Never ends: the sandbox must stop it (out of fuel).
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever))))
