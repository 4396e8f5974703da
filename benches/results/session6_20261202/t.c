#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <string.h>
#include <time.h>
#include <sys/uio.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  int mode=atoi(argv[1]); int sz=atoi(argv[2]); int n=atoi(argv[3]);
  const char*p="/work/dio.dat";
  int fd=open(p,O_RDWR|O_CREAT,0644);
  size_t fsz=256<<20; char*z=aligned_alloc(4096,1<<20); memset(z,0,1<<20);
  struct stat st; 
  if(lseek(fd,0,SEEK_END)<fsz){ for(size_t o=0;o<fsz;o+=1<<20) pwrite(fd,z,1<<20,o); fsync(fd);}
  close(fd);
  int fl=O_RDWR; if(mode>=1) fl|=O_DIRECT; if(mode==2) fl|=O_DSYNC;
  fd=open(p,fl);
  size_t asz=(sz+4095)&~4095; char*b=aligned_alloc(4096,asz); memset(b,'x',asz);
  double t0=now(); off_t off=0;
  for(int i=0;i<n;i++){
    size_t w = mode? asz: sz;
    if(pwrite(fd,b,w,off)!=w){perror("pwrite");return 1;}
    if(mode!=2) fdatasync(fd);
    off += mode? asz: sz; if(off+asz>fsz) off=0;
  }
  double t=now()-t0; printf("mode %d sz %d: %.0f ops/s %.1f us\n",mode,sz,n/t,t/n*1e6);
}
