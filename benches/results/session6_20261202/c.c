#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int fd; int sz; int n; int nt;
void* run(void*a){ long id=(long)a; char*b=malloc(sz); memset(b,'y',sz);
  off_t off=id*(sz*(off_t)n);
  for(int i=0;i<n;i++){ pwrite(fd,b,sz,off); off+=sz; fdatasync(fd);} return 0;}
int main(int argc,char**argv){ nt=atoi(argv[1]); sz=atoi(argv[2]); n=atoi(argv[3]);
  fd=open("/work/dio.dat",O_RDWR);
  pthread_t th[64]; double t0=now();
  for(long i=0;i<nt;i++) pthread_create(&th[i],0,run,(void*)i);
  for(int i=0;i<nt;i++) pthread_join(th[i],0);
  double t=now()-t0; printf("threads %d sz %d: %.0f total syncs/s\n",nt,sz,nt*n/t);
}
