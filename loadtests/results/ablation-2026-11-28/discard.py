import socket, os, sys
os.sched_setaffinity(0,{0})
srv=socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(('127.0.0.1',int(sys.argv[1]))); srv.listen(8)
buf=bytearray(1<<20)
while True:
    c,_=srv.accept()
    if os.fork()==0:
        srv.close()
        while c.recv_into(buf): pass
        os._exit(0)
    c.close()
